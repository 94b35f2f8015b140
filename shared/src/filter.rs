//! Destination filters: which events a destination receives. Checked once when a destination is
//! written (`Filter::parse`, naming the part at fault), evaluated by the forwarder on every event
//! (`Filter::matches`), and mapped onto JetStream filter subjects (`Filter::subjects`) so that the
//! server itself drops most of what a destination does not want.
//!
//! # Grammar
//!
//! ```json
//! {"tenant_id": ["acme"], "channel_id": ["wa-main"], "source": ["whatsapp"], "platform": ["whatsapp"],
//!  "kind": ["message", "status"], "match": {"message.type": {"$in": ["text", "image"]}}}
//! ```
//!
//! Every part is optional; every part given must hold. A list means "any of"; an empty list (or
//! `null`) is the same as leaving the part out. `{}` and `null` match every event.
//!
//! `match` tests the event's JSON (as published on `HOOKLINE_EVENTS`) by dotted path. Each key of
//! a match object is either a path or an operator:
//!
//! - `"message.type": "text"`: a bare value means equal (see `$eq`).
//! - `"message": {"type": "text"}`: an object without operators continues the path, so this is
//!   the same as the line above (Hookdeck's and Convoy's "nested object match").
//! - `"message.type": {"$in": ["text", "image"], "$neq": "image"}`: operators apply to the value
//!   at the path; several in one object must all hold.
//! - `"$and": [{...}, {...}]`, `"$or": [{...}, {...}]`, `"$not": {...}`: sub-filters, themselves
//!   match objects, tested at the same place (so `{"message": {"$or": [{"type": "text"},
//!   {"text": {"$exists": true}}]}}` reads paths under `message`).
//!
//! A path segment that is all digits also indexes an array (`message.contacts.0.name`).
//!
//! | operator | operand | holds when the value at the path … |
//! |---|---|---|
//! | bare value, `$eq` | any JSON | equals it; or is an array that holds an element equal to it (a non-array operand) |
//! | `$neq` | any JSON | does not, as `$eq` would say; also when the path is absent |
//! | `$in` | list | equals one of the list (an array value: holds one of them) |
//! | `$nin` | list | does not, as `$in` would say; also when the path is absent |
//! | `$exists` (`$exist`) | `true`/`false` | is present (any JSON, `null` included) / absent |
//! | `$gt` `$gte` `$lt` `$lte` | number or string | compares: numbers with numbers, strings with strings (byte order, so RFC 3339 times compare) |
//! | `$prefix` `$suffix` | string | is a string that starts / ends with it |
//! | `$contains` | any JSON | is a string holding it as a substring (a string operand), or an array holding an element equal to it |
//!
//! Numbers are equal by value (`1` equals `1.0`). A value of another type than the operator
//! needs (a number tested with `$prefix`, a string with `$gt 5`, an absent path) makes the test
//! false, never an error: the filter was checked when it was written, the event is what it is.
//! These follow Hookdeck and Convoy: `$neq`/`$nin`/bare values/`$or`/`$and`/`$gte`…, array
//! "contains" for a bare value, `$exist` accepted as Hookdeck and Convoy spell it; `$prefix`,
//! `$suffix` are Hookdeck's `$startsWith`/`$endsWith`. Unlike Convoy (which skips a test whose
//! field is absent), an absent field fails every test but `$neq`, `$nin` and `$exists: false`,
//! which are the negations of tests that fail (as in MongoDB).
//!
//! # Limits
//!
//! A filter nests at most [`MAX_DEPTH`] match objects deep (operand values too), holds at most
//! [`MAX_OPERATORS`] operators in all (bare values and `$and`/`$or`/`$not` count), strings and
//! keys of at most [`MAX_STRING_BYTES`] bytes and lists of at most [`MAX_LIST_LEN`] entries.
//! Anything beyond is refused when written, naming the field.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Number, Value};
use std::cmp::Ordering as CmpOrdering;
use std::fmt;

use crate::event::{EventKind, NormalizedEvent};
use crate::names::{self, is_valid_id};
use crate::Source;

/// Match objects nest at most this deep (the `match` object itself is level 1).
pub const MAX_DEPTH: usize = 8;
/// Operators in one filter, bare values and `$and`/`$or`/`$not` included.
pub const MAX_OPERATORS: usize = 64;
/// Longest string (or object key) in a filter, in bytes.
pub const MAX_STRING_BYTES: usize = 1024;
/// Longest list in a filter.
pub const MAX_LIST_LEN: usize = 256;
/// Most JetStream filter subjects [`Filter::subjects`] returns.
pub const MAX_SUBJECTS: usize = 64;

const TOP_KEYS: &str = "tenant_id, channel_id, source, platform, kind or match";
const OPERATORS: &str = "$eq, $neq, $in, $nin, $exists, $gt, $gte, $lt, $lte, $prefix, $suffix, $contains, $and, $or, $not";
const KINDS: [EventKind; 5] = [EventKind::Message, EventKind::Status, EventKind::Payment, EventKind::ChatEvent, EventKind::Other];

/// A filter refused: `field` is the dotted path of the part at fault, `filter.` first
/// (`filter.kind`, `filter.match.sender.id.$in`, `filter.match.$or[1].message.type`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FilterError {
    pub field: String,
    pub message: String,
}

impl FilterError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FilterError { field: field.into(), message: message.into() }
    }
}

/// Which events a destination receives. Built only by [`Filter::parse`] (or deserialized, which
/// parses), so a `Filter` is always valid. It serializes as the very JSON it was parsed from.
#[derive(Clone)]
pub struct Filter {
    raw: Value,
    tenant_ids: Option<Vec<String>>,
    channel_ids: Option<Vec<String>>,
    sources: Option<Vec<Source>>,
    platforms: Option<Vec<String>>,
    kinds: Option<Vec<EventKind>>,
    /// All must hold; empty: no `match`.
    conditions: Vec<Cond>,
}

impl Default for Filter {
    /// The empty filter, `{}`: every event.
    fn default() -> Self {
        Filter {
            raw: Value::Object(Map::new()),
            tenant_ids: None,
            channel_ids: None,
            sources: None,
            platforms: None,
            kinds: None,
            conditions: Vec::new(),
        }
    }
}

impl PartialEq for Filter {
    fn eq(&self, other: &Self) -> bool {
        self.raw == other.raw
    }
}

impl fmt::Debug for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Filter").field(&self.raw).finish()
    }
}

impl Serialize for Filter {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.raw.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Filter {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(d)?;
        Filter::parse(&value).map_err(serde::de::Error::custom)
    }
}

/// The platforms channels can be for (`Source::platforms` of every source), without repeats.
pub fn known_platforms() -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for p in Source::ALL.iter().flat_map(|s| s.platforms()) {
        if !out.contains(p) {
            out.push(*p);
        }
    }
    out
}

impl Filter {
    /// Parses and checks a filter, as written by the setup API or `hookline.toml`. `null` is the
    /// empty filter.
    pub fn parse(value: &Value) -> Result<Filter, FilterError> {
        let obj = match value {
            Value::Null => return Ok(Filter { raw: Value::Null, ..Filter::default() }),
            Value::Object(obj) => obj,
            _ => return Err(FilterError::new("filter", format!("must be an object with any of {TOP_KEYS}"))),
        };
        let mut filter = Filter { raw: value.clone(), ..Filter::default() };
        for (key, v) in obj {
            match key.as_str() {
                "tenant_id" => filter.tenant_ids = id_list(v, "filter.tenant_id", "tenant id")?,
                "channel_id" => filter.channel_ids = id_list(v, "filter.channel_id", "channel id")?,
                "source" => {
                    filter.sources = map_list(v, "filter.source", |s| s.parse::<Source>().map_err(|e| e.to_string()))?;
                }
                "platform" => {
                    let known = known_platforms();
                    filter.platforms = map_list(v, "filter.platform", |s| match known.iter().find(|p| **p == s) {
                        Some(p) => Ok(p.to_string()),
                        None => Err(format!("unknown platform {s:?}: expected one of {}", known.join(", "))),
                    })?;
                }
                "kind" => {
                    filter.kinds = map_list(v, "filter.kind", |s| {
                        KINDS
                            .into_iter()
                            .find(|k| k.as_str() == s)
                            .ok_or_else(|| format!("unknown kind {s:?}: expected one of message, status, payment, chat_event, other"))
                    })?;
                }
                "match" => filter.conditions = parse_match(v)?,
                other if other.len() > MAX_STRING_BYTES => {
                    return Err(FilterError::new("filter", format!("a key longer than {MAX_STRING_BYTES} bytes")));
                }
                other => return Err(FilterError::new(format!("filter.{other}"), format!("unknown key: expected {TOP_KEYS}"))),
            }
        }
        Ok(filter)
    }

    /// The JSON the filter was parsed from.
    pub fn as_json(&self) -> &Value {
        &self.raw
    }

    /// Whether it matches every event.
    pub fn is_empty(&self) -> bool {
        self.tenant_ids.is_none()
            && self.channel_ids.is_none()
            && self.sources.is_none()
            && self.platforms.is_none()
            && self.kinds.is_none()
            && self.conditions.is_empty()
    }

    /// The `tenant_id` list, `None` when unconstrained.
    pub fn tenant_ids(&self) -> Option<&[String]> {
        self.tenant_ids.as_deref()
    }

    pub fn channel_ids(&self) -> Option<&[String]> {
        self.channel_ids.as_deref()
    }

    pub fn sources(&self) -> Option<&[Source]> {
        self.sources.as_deref()
    }

    pub fn platforms(&self) -> Option<&[String]> {
        self.platforms.as_deref()
    }

    pub fn kinds(&self) -> Option<&[EventKind]> {
        self.kinds.as_deref()
    }

    /// Whether the filter has a `match` part (which needs the event's JSON to evaluate).
    pub fn has_match(&self) -> bool {
        !self.conditions.is_empty()
    }

    /// Whether `event` (the JSON of a `NormalizedEvent`, as published) passes the filter. Any
    /// JSON may be given; what is not an event matches only the empty filter.
    pub fn matches(&self, event: &Value) -> bool {
        let text = |key: &str| event.get(key).and_then(Value::as_str);
        let listed = |list: &Option<Vec<String>>, key: &str| match list {
            None => true,
            Some(list) => text(key).is_some_and(|v| list.iter().any(|x| x == v)),
        };
        listed(&self.tenant_ids, "tenant_id")
            && listed(&self.channel_ids, "channel_id")
            && listed(&self.platforms, "platform")
            && self.sources.as_ref().is_none_or(|l| text("source").is_some_and(|v| l.iter().any(|s| s.as_str() == v)))
            && self.kinds.as_ref().is_none_or(|l| text("kind").is_some_and(|v| l.iter().any(|k| k.as_str() == v)))
            && self.conditions.iter().all(|c| c.eval(event))
    }

    /// As [`Filter::matches`], from the typed event: the lists are tested on its fields, and the
    /// event is turned into JSON only when the filter has a `match` part.
    pub fn matches_event(&self, event: &NormalizedEvent) -> bool {
        let listed = |list: &Option<Vec<String>>, v: &str| list.as_ref().is_none_or(|l| l.iter().any(|x| x == v));
        let head = listed(&self.tenant_ids, &event.tenant_id)
            && listed(&self.channel_ids, &event.channel_id)
            && listed(&self.platforms, &event.platform)
            && self.sources.as_ref().is_none_or(|l| l.contains(&event.source))
            && self.kinds.as_ref().is_none_or(|l| l.contains(&event.kind));
        if !head || self.conditions.is_empty() {
            return head;
        }
        match serde_json::to_value(event) {
            Ok(json) => self.conditions.iter().all(|c| c.eval(&json)),
            Err(_) => false,
        }
    }

    /// The JetStream filter subjects of a consumer for this filter:
    /// `hookline.events.<tenant_id>.<platform>.<kind>`, one per combination of the `tenant_id`,
    /// `platform` and `kind` lists, `*` where a part is unconstrained (and for `kind` when the
    /// list names every kind). Sorted, without repeats.
    ///
    /// `forced_tenant` is the destination's own tenant: a destination with a tenant only ever
    /// receives that tenant's events, whatever its filter says. Its subjects name that tenant
    /// alone; and when the filter's `tenant_id` list leaves that tenant out, the answer is
    /// **no subjects at all**: the destination receives nothing (a consumer must not be created
    /// with an empty subject list, which JetStream reads as "everything"). A forced tenant that
    /// is not a subject-safe id also gives no subjects.
    ///
    /// At most [`MAX_SUBJECTS`]: while the product of the lists is larger, the largest list
    /// (ties: tenant, then platform, then kind) is replaced by `*`. The subjects are then wider
    /// than the filter, which costs nothing in correctness: the forwarder evaluates
    /// [`Filter::matches`] on every event anyway (it must, for `channel_id`, `source` and
    /// `match`, which no subject expresses).
    pub fn subjects(&self, forced_tenant: Option<&str>) -> Vec<String> {
        let tenants: Option<Vec<&str>> = match forced_tenant {
            Some(t) => {
                let excluded = self.tenant_ids.as_ref().is_some_and(|l| !l.iter().any(|x| x == t));
                if !is_valid_id(t) || excluded {
                    return Vec::new();
                }
                Some(vec![t])
            }
            None => self.tenant_ids.as_ref().map(|l| l.iter().map(String::as_str).collect()),
        };
        let platforms: Option<Vec<&str>> = self.platforms.as_ref().map(|l| l.iter().map(String::as_str).collect());
        let kinds: Option<Vec<&str>> = match &self.kinds {
            Some(l) if !KINDS.iter().all(|k| l.contains(k)) => Some(l.iter().map(|k| k.as_str()).collect()),
            _ => None,
        };
        let mut dims = [tenants, platforms, kinds];
        for dim in dims.iter_mut().flatten() {
            dim.sort_unstable();
            dim.dedup();
        }
        let len = |d: &Option<Vec<&str>>| d.as_ref().map_or(1, Vec::len);
        while dims.iter().map(len).product::<usize>() > MAX_SUBJECTS {
            let mut largest = 0;
            for i in 1..dims.len() {
                if len(&dims[i]) > len(&dims[largest]) {
                    largest = i;
                }
            }
            dims[largest] = None;
        }
        let tokens = |d: &Option<Vec<&'_ str>>| -> Vec<String> {
            match d {
                Some(list) => list.iter().map(|s| s.to_string()).collect(),
                None => vec!["*".to_string()],
            }
        };
        let [t, p, k] = &dims;
        let (t, p, k) = (tokens(t), tokens(p), tokens(k));
        let mut out = Vec::with_capacity(t.len() * p.len() * k.len());
        for tenant in &t {
            for platform in &p {
                for kind in &k {
                    out.push(names::event_subject(tenant, platform, kind));
                }
            }
        }
        out.sort_unstable();
        out
    }
}

/// A list of strings, each turned into `T` by `f` (whose error is the message). `null` and `[]`
/// mean unconstrained.
fn map_list<T>(v: &Value, field: &str, f: impl Fn(&str) -> Result<T, String>) -> Result<Option<Vec<T>>, FilterError> {
    let items = match v {
        Value::Null => return Ok(None),
        Value::Array(items) => items,
        _ => return Err(FilterError::new(field, "must be a list of strings")),
    };
    if items.len() > MAX_LIST_LEN {
        return Err(FilterError::new(field, format!("more than {MAX_LIST_LEN} entries")));
    }
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let Value::String(s) = item else {
            return Err(FilterError::new(field, format!("must be a list of strings: entry {i} is not a string")));
        };
        if s.len() > MAX_STRING_BYTES {
            return Err(FilterError::new(field, format!("entry {i} is longer than {MAX_STRING_BYTES} bytes")));
        }
        out.push(f(s).map_err(|m| FilterError::new(field, format!("entry {i}: {m}")))?);
    }
    Ok(if out.is_empty() { None } else { Some(out) })
}

/// Tenant and channel ids: subject-safe tokens.
fn id_list(v: &Value, field: &str, what: &str) -> Result<Option<Vec<String>>, FilterError> {
    map_list(
        v,
        field,
        |s| {
            if is_valid_id(s) {
                Ok(s.to_string())
            } else {
                Err(format!("{s:?} is not a {what}: 1 to 64 of A-Z a-z 0-9 _ -"))
            }
        },
    )
}

/// One step of a path: an object key, or (when all digits) also an array index.
#[derive(Debug, Clone)]
struct Seg {
    key: String,
    index: Option<usize>,
}

impl Seg {
    fn new(key: &str) -> Self {
        let index = if key.bytes().all(|b| b.is_ascii_digit()) { key.parse().ok() } else { None };
        Seg { key: key.to_string(), index }
    }
}

#[derive(Debug, Clone, Copy)]
enum CmpOp {
    Gt,
    Gte,
    Lt,
    Lte,
}

#[derive(Debug, Clone)]
enum Test {
    Eq(Value),
    Neq(Value),
    In(Vec<Value>),
    Nin(Vec<Value>),
    Exists(bool),
    Cmp(CmpOp, Value),
    Prefix(String),
    Suffix(String),
    Contains(Value),
}

#[derive(Debug, Clone)]
enum Cond {
    All(Vec<Cond>),
    Any(Vec<Cond>),
    Not(Box<Cond>),
    Test { path: Vec<Seg>, test: Test },
}

impl Cond {
    fn eval(&self, event: &Value) -> bool {
        match self {
            Cond::All(cs) => cs.iter().all(|c| c.eval(event)),
            Cond::Any(cs) => cs.iter().any(|c| c.eval(event)),
            Cond::Not(c) => !c.eval(event),
            Cond::Test { path, test } => test.holds(resolve(event, path)),
        }
    }
}

fn resolve<'a>(root: &'a Value, path: &[Seg]) -> Option<&'a Value> {
    let mut cur = root;
    for seg in path {
        cur = match cur {
            Value::Object(map) => map.get(&seg.key)?,
            Value::Array(items) => items.get(seg.index?)?,
            _ => return None,
        };
    }
    Some(cur)
}

impl Test {
    fn holds(&self, value: Option<&Value>) -> bool {
        match (self, value) {
            (Test::Exists(want), v) => v.is_some() == *want,
            (Test::Neq(op), v) => !v.is_some_and(|v| equal_or_holds(v, op)),
            (Test::Nin(ops), v) => !v.is_some_and(|v| ops.iter().any(|op| equal_or_holds(v, op))),
            (_, None) => false,
            (Test::Eq(op), Some(v)) => equal_or_holds(v, op),
            (Test::In(ops), Some(v)) => ops.iter().any(|op| equal_or_holds(v, op)),
            (Test::Cmp(cmp, op), Some(v)) => match order(v, op) {
                Some(o) => match cmp {
                    CmpOp::Gt => o == CmpOrdering::Greater,
                    CmpOp::Gte => o != CmpOrdering::Less,
                    CmpOp::Lt => o == CmpOrdering::Less,
                    CmpOp::Lte => o != CmpOrdering::Greater,
                },
                None => false,
            },
            (Test::Prefix(p), Some(v)) => v.as_str().is_some_and(|s| s.starts_with(p.as_str())),
            (Test::Suffix(p), Some(v)) => v.as_str().is_some_and(|s| s.ends_with(p.as_str())),
            (Test::Contains(op), Some(v)) => match (v, op) {
                (Value::String(s), Value::String(sub)) => s.contains(sub.as_str()),
                (Value::Array(items), op) => items.iter().any(|e| json_eq(e, op)),
                _ => false,
            },
        }
    }
}

/// Equality, or (Hookdeck, Convoy, MongoDB) an array value holding an element equal to a
/// non-array operand.
fn equal_or_holds(value: &Value, op: &Value) -> bool {
    json_eq(value, op) || matches!(value, Value::Array(items) if !op.is_array() && items.iter().any(|e| json_eq(e, op)))
}

/// JSON equality, numbers by value (`1 == 1.0`).
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => num_cmp(x, y) == Some(CmpOrdering::Equal),
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_eq(a, b)),
        (Value::Object(x), Value::Object(y)) => x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w))),
        _ => a == b,
    }
}

fn num_cmp(x: &Number, y: &Number) -> Option<CmpOrdering> {
    if let (Some(a), Some(b)) = (x.as_i64(), y.as_i64()) {
        return Some(a.cmp(&b));
    }
    if let (Some(a), Some(b)) = (x.as_u64(), y.as_u64()) {
        return Some(a.cmp(&b));
    }
    x.as_f64()?.partial_cmp(&y.as_f64()?)
}

/// Numbers with numbers, strings with strings (byte order); anything else does not compare.
fn order(value: &Value, op: &Value) -> Option<CmpOrdering> {
    match (value, op) {
        (Value::Number(x), Value::Number(y)) => num_cmp(x, y),
        (Value::String(x), Value::String(y)) => Some(x.as_str().cmp(y.as_str())),
        _ => None,
    }
}

fn parse_match(v: &Value) -> Result<Vec<Cond>, FilterError> {
    match v {
        Value::Null => Ok(Vec::new()),
        Value::Object(obj) => {
            let mut parser = MatchParser { operators: 0 };
            let mut out = Vec::new();
            parser.node(obj, &[], "filter.match", 1, &mut out)?;
            Ok(out)
        }
        _ => Err(FilterError::new("filter.match", "must be an object of paths and operators")),
    }
}

struct MatchParser {
    operators: usize,
}

impl MatchParser {
    fn count(&mut self, field: &str) -> Result<(), FilterError> {
        self.operators += 1;
        if self.operators > MAX_OPERATORS {
            return Err(FilterError::new(field, format!("more than {MAX_OPERATORS} operators in the filter")));
        }
        Ok(())
    }

    /// The tests of one match object at `prefix`, appended to `out` (all must hold).
    fn node(
        &mut self,
        obj: &Map<String, Value>,
        prefix: &[Seg],
        field: &str,
        depth: usize,
        out: &mut Vec<Cond>,
    ) -> Result<(), FilterError> {
        if depth > MAX_DEPTH {
            return Err(FilterError::new(field, format!("nested more than {MAX_DEPTH} levels deep")));
        }
        for (key, value) in obj {
            if key.len() > MAX_STRING_BYTES {
                return Err(FilterError::new(field, format!("a key longer than {MAX_STRING_BYTES} bytes")));
            }
            let here = format!("{field}.{key}");
            if key.starts_with('$') {
                self.operator(key, value, prefix, &here, depth, out)?;
                continue;
            }
            let mut path = prefix.to_vec();
            for seg in key.split('.') {
                if seg.is_empty() {
                    return Err(FilterError::new(here, "an empty path segment: a path is names separated by single dots (message.type)"));
                }
                if seg.starts_with('$') {
                    return Err(FilterError::new(here, "a path segment may not start with $: operators are keys of the value"));
                }
                path.push(Seg::new(seg));
            }
            match value {
                Value::Object(sub) if sub.is_empty() => {
                    return Err(FilterError::new(here, "an empty object: to require the field write {\"$exists\": true}"));
                }
                Value::Object(sub) => self.node(sub, &path, &here, depth + 1, out)?,
                _ => {
                    self.count(&here)?;
                    check_value(value, &here, depth + 1)?;
                    out.push(Cond::Test { path, test: Test::Eq(value.clone()) });
                }
            }
        }
        Ok(())
    }

    fn sub_filter(&mut self, value: &Value, prefix: &[Seg], field: &str, depth: usize) -> Result<Cond, FilterError> {
        match value {
            Value::Object(sub) if !sub.is_empty() => {
                let mut conj = Vec::new();
                self.node(sub, prefix, field, depth + 1, &mut conj)?;
                Ok(Cond::All(conj))
            }
            Value::Object(_) => Err(FilterError::new(field, "an empty sub-filter")),
            _ => Err(FilterError::new(field, "must be a sub-filter: an object of paths and operators")),
        }
    }

    fn operator(
        &mut self,
        key: &str,
        value: &Value,
        prefix: &[Seg],
        here: &str,
        depth: usize,
        out: &mut Vec<Cond>,
    ) -> Result<(), FilterError> {
        let err = |m: &str| FilterError::new(here, m);
        match key {
            "$and" | "$or" => {
                self.count(here)?;
                let Value::Array(items) = value else {
                    return Err(err("must be a list of sub-filters (objects)"));
                };
                if items.is_empty() {
                    return Err(err("must list at least one sub-filter"));
                }
                if items.len() > MAX_LIST_LEN {
                    return Err(FilterError::new(here, format!("more than {MAX_LIST_LEN} entries")));
                }
                let mut alts = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    alts.push(self.sub_filter(item, prefix, &format!("{here}[{i}]"), depth)?);
                }
                out.push(if key == "$and" { Cond::All(alts) } else { Cond::Any(alts) });
                return Ok(());
            }
            "$not" => {
                self.count(here)?;
                let sub = self.sub_filter(value, prefix, here, depth)?;
                out.push(Cond::Not(Box::new(sub)));
                return Ok(());
            }
            _ => {}
        }
        let known = matches!(
            key,
            "$eq" | "$neq" | "$in" | "$nin" | "$exists" | "$exist" | "$gt" | "$gte" | "$lt" | "$lte" | "$prefix" | "$suffix" | "$contains"
        );
        if !known {
            return Err(FilterError::new(here, format!("unknown operator {key}: expected one of {OPERATORS}")));
        }
        self.count(here)?;
        if prefix.is_empty() {
            return Err(err("an operator needs a path: write {\"message.type\": {\"$eq\": \"text\"}}"));
        }
        let list = |value: &Value| -> Result<Vec<Value>, FilterError> {
            let Value::Array(items) = value else {
                return Err(err("must be a list of values"));
            };
            check_value(value, here, depth + 1)?;
            Ok(items.clone())
        };
        let text = |value: &Value| -> Result<String, FilterError> {
            match value {
                Value::String(s) if s.len() > MAX_STRING_BYTES => {
                    Err(FilterError::new(here, format!("longer than {MAX_STRING_BYTES} bytes")))
                }
                Value::String(s) => Ok(s.clone()),
                _ => Err(err("must be a string")),
            }
        };
        let cmp = |op: CmpOp| -> Result<Test, FilterError> {
            match value {
                Value::Number(_) => Ok(Test::Cmp(op, value.clone())),
                Value::String(_) => text(value).map(|_| Test::Cmp(op, value.clone())),
                _ => Err(err("must be a number or a string")),
            }
        };
        let any = |value: &Value| -> Result<Value, FilterError> {
            check_value(value, here, depth + 1)?;
            Ok(value.clone())
        };
        let test = match key {
            "$eq" => Test::Eq(any(value)?),
            "$neq" => Test::Neq(any(value)?),
            "$in" => Test::In(list(value)?),
            "$nin" => Test::Nin(list(value)?),
            "$exists" | "$exist" => match value {
                Value::Bool(b) => Test::Exists(*b),
                _ => return Err(err("must be true or false")),
            },
            "$gt" => cmp(CmpOp::Gt)?,
            "$gte" => cmp(CmpOp::Gte)?,
            "$lt" => cmp(CmpOp::Lt)?,
            "$lte" => cmp(CmpOp::Lte)?,
            "$prefix" => Test::Prefix(text(value)?),
            "$suffix" => Test::Suffix(text(value)?),
            _ => Test::Contains(any(value)?),
        };
        out.push(Cond::Test { path: prefix.to_vec(), test });
        Ok(())
    }
}

/// Limits on an operand value: strings and keys, list lengths, nesting.
fn check_value(v: &Value, field: &str, depth: usize) -> Result<(), FilterError> {
    let too_deep = || FilterError::new(field, format!("nested more than {MAX_DEPTH} levels deep"));
    match v {
        Value::String(s) if s.len() > MAX_STRING_BYTES => {
            Err(FilterError::new(field, format!("a string longer than {MAX_STRING_BYTES} bytes")))
        }
        Value::Array(_) | Value::Object(_) if depth > MAX_DEPTH => Err(too_deep()),
        Value::Array(items) => {
            if items.len() > MAX_LIST_LEN {
                return Err(FilterError::new(field, format!("more than {MAX_LIST_LEN} entries")));
            }
            for (i, item) in items.iter().enumerate() {
                check_value(item, &format!("{field}[{i}]"), depth + 1)?;
            }
            Ok(())
        }
        Value::Object(map) => {
            if map.len() > MAX_LIST_LEN {
                return Err(FilterError::new(field, format!("more than {MAX_LIST_LEN} keys")));
            }
            for (k, item) in map {
                if k.len() > MAX_STRING_BYTES {
                    return Err(FilterError::new(field, format!("a key longer than {MAX_STRING_BYTES} bytes")));
                }
                check_value(item, &format!("{field}.{k}"), depth + 1)?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn f(v: Value) -> Filter {
        Filter::parse(&v).unwrap_or_else(|e| panic!("{v} should parse: {e}"))
    }

    fn event() -> Value {
        json!({
            "id": "evt_1",
            "schema_version": 1,
            "kind": "message",
            "source": "whatsapp",
            "platform": "whatsapp",
            "provider": "meta",
            "tenant_id": "acme",
            "channel_id": "wa-main",
            "occurred_at": "2026-03-01T10:00:00Z",
            "received_at": "2026-03-01T10:00:01Z",
            "conversation": {"id": "5511999", "type": "direct"},
            "sender": {"id": "5511999", "name": "Ana", "phone": "+5511999"},
            "message": {
                "id": "wamid.1",
                "type": "text",
                "text": "hello world",
                "contacts": [{"name": "Bo", "phones": ["+1"]}],
                "tags": ["vip", 7, 2.5]
            },
            "amount": 150,
            "ratio": 0.5,
            "raw": {"subject": "hookline.raw.whatsapp.wa-main", "seq": 42}
        })
    }

    /// Whether `match_` (the `match` part) matches the sample event.
    fn m(match_: Value) -> bool {
        f(json!({ "match": match_ })).matches(&event())
    }

    #[test]
    fn an_absent_or_empty_filter_matches_everything() {
        for v in [json!(null), json!({}), json!({"match": {}}), json!({"kind": [], "tenant_id": null, "match": null})] {
            let filter = f(v.clone());
            assert!(filter.is_empty(), "{v}");
            assert!(filter.matches(&event()), "{v}");
            assert!(filter.matches(&json!("not even an object")), "{v}");
        }
        assert!(Filter::default().is_empty());
    }

    #[test]
    fn lists_mean_any_of_and_every_part_must_hold() {
        assert!(f(json!({"tenant_id": ["other", "acme"]})).matches(&event()));
        assert!(!f(json!({"tenant_id": ["other"]})).matches(&event()));
        assert!(f(json!({"channel_id": ["wa-main"]})).matches(&event()));
        assert!(!f(json!({"channel_id": ["tg"]})).matches(&event()));
        assert!(f(json!({"source": ["telegram", "whatsapp"]})).matches(&event()));
        assert!(!f(json!({"source": ["twilio"]})).matches(&event()));
        assert!(f(json!({"platform": ["whatsapp"]})).matches(&event()));
        assert!(!f(json!({"platform": ["sms"]})).matches(&event()));
        assert!(f(json!({"kind": ["status", "message"]})).matches(&event()));
        assert!(!f(json!({"kind": ["payment"]})).matches(&event()));
        assert!(f(json!({"kind": ["message"], "tenant_id": ["acme"], "match": {"message.type": "text"}})).matches(&event()));
        assert!(!f(json!({"kind": ["message"], "tenant_id": ["acme"], "match": {"message.type": "image"}})).matches(&event()));
        assert!(!f(json!({"kind": ["message"], "tenant_id": ["beta"], "match": {"message.type": "text"}})).matches(&event()));
        // A JSON that is not an event has no tenant, so a list cannot hold.
        assert!(!f(json!({"tenant_id": ["acme"]})).matches(&json!([1, 2])));
    }

    #[test]
    fn bare_values_and_eq() {
        assert!(m(json!({"message.type": "text"})));
        assert!(!m(json!({"message.type": "image"})));
        assert!(m(json!({"message": {"type": "text", "id": "wamid.1"}})), "nested object match continues the path");
        assert!(!m(json!({"message": {"type": "text", "id": "other"}})));
        assert!(m(json!({"amount": 150.0})), "numbers are equal by value");
        assert!(m(json!({"amount": {"$eq": 150}})));
        assert!(!m(json!({"amount": {"$eq": "150"}})), "no coercion between types");
        assert!(m(json!({"message.tags": "vip"})), "an array holding the value");
        assert!(m(json!({"message.tags": 7})));
        assert!(!m(json!({"message.tags": "gold"})));
        assert!(m(json!({"message.tags": ["vip", 7, 2.5]})), "a list operand is compared whole");
        assert!(!m(json!({"message.tags": ["vip"]})));
        assert!(m(json!({"conversation": {"$eq": {"type": "direct", "id": "5511999"}}})), "objects compare whole");
        assert!(!m(json!({"conversation": {"$eq": {"type": "direct"}}})));
        assert!(!m(json!({"nothing.here": {"$eq": null}})), "an absent path is not null");
        assert!(m(json!({"message.contacts.0.name": "Bo"})), "digits index arrays");
        assert!(!m(json!({"message.contacts.1.name": "Bo"})));
        assert!(m(json!({"raw.seq": 42})));
    }

    #[test]
    fn neq() {
        assert!(m(json!({"message.type": {"$neq": "image"}})));
        assert!(!m(json!({"message.type": {"$neq": "text"}})));
        assert!(m(json!({"payment.action": {"$neq": "refund"}})), "an absent path is not equal");
        assert!(!m(json!({"message.tags": {"$neq": "vip"}})), "the negation of eq, arrays included");
        assert!(!m(json!({"amount": {"$neq": 150.0}})));
    }

    #[test]
    fn in_and_nin() {
        assert!(m(json!({"message.type": {"$in": ["image", "text"]}})));
        assert!(!m(json!({"message.type": {"$in": ["image", "audio"]}})));
        assert!(!m(json!({"message.type": {"$in": []}})));
        assert!(m(json!({"amount": {"$in": [1, 150.0]}})));
        assert!(m(json!({"message.tags": {"$in": ["gold", "vip"]}})), "an array value holding one of them");
        assert!(!m(json!({"payment.action": {"$in": ["refund"]}})));
        assert!(m(json!({"message.type": {"$nin": ["image", "audio"]}})));
        assert!(!m(json!({"message.type": {"$nin": ["text"]}})));
        assert!(m(json!({"payment.action": {"$nin": ["refund"]}})), "an absent path is in no list");
    }

    #[test]
    fn exists() {
        assert!(m(json!({"sender.name": {"$exists": true}})));
        assert!(!m(json!({"sender.username": {"$exists": true}})));
        assert!(m(json!({"sender.username": {"$exists": false}})));
        assert!(!m(json!({"sender.name": {"$exists": false}})));
        assert!(m(json!({"sender.name": {"$exist": true}})), "Hookdeck's and Convoy's spelling");
        assert!(!m(json!({"sender.name.first": {"$exists": true}})), "a path through a string does not exist");
        let with_null = f(json!({"match": {"a": {"$exists": true}}}));
        assert!(with_null.matches(&json!({"a": null})), "null is present");
    }

    #[test]
    fn numeric_and_string_comparisons() {
        for (op, on_150, on_151) in [("$gt", false, true), ("$gte", true, true), ("$lt", false, false), ("$lte", true, false)] {
            assert_eq!(m(json!({"amount": {op: 150}})), on_150, "150 {op} 150");
            assert_eq!(m(json!({"amount": {op: 149}})), on_151, "150 {op} 149");
        }
        assert!(m(json!({"amount": {"$gt": 149.5, "$lt": 150.5}})), "several operators all hold");
        assert!(!m(json!({"amount": {"$gt": 149.5, "$lt": 150}})));
        assert!(m(json!({"ratio": {"$gt": 0, "$lte": 0.5}})));
        assert!(m(json!({"amount": {"$gt": -1}})));
        assert!(m(json!({"amount": {"$lt": 18446744073709551615u64}})));
        assert!(m(json!({"occurred_at": {"$gte": "2026-03-01T00:00:00Z", "$lt": "2026-03-02T00:00:00Z"}})), "RFC 3339 compares as strings");
        assert!(!m(json!({"occurred_at": {"$gt": "2026-03-01T10:00:00Z"}})));
        assert!(m(json!({"sender.name": {"$lt": "Bob"}})));
    }

    #[test]
    fn prefix_suffix_contains() {
        assert!(m(json!({"message.id": {"$prefix": "wamid."}})));
        assert!(!m(json!({"message.id": {"$prefix": "mid."}})));
        assert!(m(json!({"sender.phone": {"$suffix": "999"}})));
        assert!(!m(json!({"sender.phone": {"$suffix": "000"}})));
        assert!(m(json!({"message.text": {"$contains": "lo wo"}})));
        assert!(!m(json!({"message.text": {"$contains": "bye"}})));
        assert!(m(json!({"message.tags": {"$contains": "vip"}})));
        assert!(m(json!({"message.tags": {"$contains": 2.5}})));
        assert!(!m(json!({"message.tags": {"$contains": "vi"}})), "arrays hold whole elements");
        assert!(m(json!({"message.contacts": {"$contains": {"name": "Bo", "phones": ["+1"]}}})));
    }

    #[test]
    fn type_mismatches_do_not_match() {
        for t in [
            json!({"message.type": {"$gt": 5}}),
            json!({"amount": {"$gt": "100"}}),
            json!({"amount": {"$prefix": "1"}}),
            json!({"amount": {"$suffix": "0"}}),
            json!({"amount": {"$contains": "5"}}),
            json!({"message.text": {"$contains": 5}}),
            json!({"message.tags": {"$gt": 1}}),
            json!({"sender": {"$lt": "z"}}),
            json!({"payment.id": {"$gte": 0}}),
            json!({"payment.id": {"$prefix": ""}}),
            json!({"message.text.length": 11}),
            json!({"message.contacts.x": "Bo"}),
        ] {
            assert!(!m(t.clone()), "{t} should not match");
        }
    }

    #[test]
    fn and_or_not_nest() {
        assert!(m(json!({"$or": [{"message.type": "image"}, {"message.type": "text"}]})));
        assert!(!m(json!({"$or": [{"message.type": "image"}, {"kind": "status"}]})));
        assert!(m(json!({"$and": [{"message.type": "text"}, {"sender.id": {"$prefix": "55"}}]})));
        assert!(!m(json!({"$and": [{"message.type": "text"}, {"sender.id": {"$prefix": "1"}}]})));
        assert!(m(json!({"$not": {"message.type": "image"}})));
        assert!(!m(json!({"$not": {"message.type": "text"}})));
        assert!(m(json!({"message.type": {"$not": {"$in": ["image", "audio"]}}})), "$not at a path tests that path");
        assert!(m(json!({"message": {"$or": [{"type": "image"}, {"text": {"$exists": true}}]}})), "sub-filters keep the path");
        let nested = json!({"$or": [
            {"$and": [{"kind": "status"}, {"status.state": "failed"}]},
            {"$and": [{"message.type": "text"}, {"$not": {"$or": [{"sender.id": "1"}, {"sender.id": "2"}]}}]}
        ]});
        assert!(m(nested));
        let nested_false = json!({"$or": [
            {"$and": [{"kind": "status"}, {"status.state": "failed"}]},
            {"$and": [{"message.type": "text"}, {"$not": {"$or": [{"sender.id": "5511999"}, {"sender.id": "2"}]}}]}
        ]});
        assert!(!m(nested_false));
        assert!(
            m(json!({"kind": "message", "$or": [{"amount": {"$gt": 1000}}, {"ratio": {"$lte": 0.5}}]})),
            "paths and operators side by side"
        );
    }

    #[test]
    fn matches_event_agrees_with_matches() {
        use crate::event::{Message, MessageType, Sender};
        let mut message = Message::new("wamid.1", MessageType::Text);
        message.text = Some("hello".into());
        let ev = NormalizedEvent {
            id: "e1".into(),
            schema_version: 1,
            kind: EventKind::Message,
            source: Source::Twilio,
            platform: "sms".into(),
            provider: "twilio".into(),
            tenant_id: "acme".into(),
            channel_id: "tw".into(),
            occurred_at: None,
            received_at: "2026-03-01T10:00:01Z".into(),
            conversation: None,
            sender: Some(Sender { id: "+1555".into(), ..Default::default() }),
            message: Some(message),
            status: None,
            payment: None,
            chat_event: None,
            raw: None,
            replay: false,
        };
        let json = serde_json::to_value(&ev).expect("to json");
        for v in [
            json!({}),
            json!({"source": ["twilio"], "platform": ["sms"]}),
            json!({"source": ["whatsapp"]}),
            json!({"kind": ["status"]}),
            json!({"tenant_id": ["acme"], "channel_id": ["tw"], "match": {"message.type": "text", "sender.id": {"$prefix": "+1"}}}),
            json!({"match": {"message.text": {"$contains": "bye"}}}),
        ] {
            let filter = f(v.clone());
            assert_eq!(filter.matches_event(&ev), filter.matches(&json), "{v}");
        }
    }

    /// Input → the field the error names.
    #[test]
    fn every_refusal_names_its_field() {
        let long = "x".repeat(MAX_STRING_BYTES + 1);
        let many: Vec<Value> = (0..=MAX_LIST_LEN).map(|i| json!(i)).collect();
        let deep = (0..MAX_DEPTH).fold(json!("v"), |acc, i| json!({ format!("k{i}"): acc }));
        let too_many_ops: Map<String, Value> = (0..=MAX_OPERATORS).map(|i| (format!("f{i:02}"), json!(i))).collect();
        let cases: Vec<(Value, &str)> = vec![
            (json!([]), "filter"),
            (json!("kind"), "filter"),
            (json!({"colour": ["red"]}), "filter.colour"),
            (json!({"kind": "message"}), "filter.kind"),
            (json!({"kind": [1]}), "filter.kind"),
            (json!({"kind": ["mesage"]}), "filter.kind"),
            (json!({"source": ["whatsap"]}), "filter.source"),
            (json!({"platform": ["fax"]}), "filter.platform"),
            (json!({"tenant_id": ["a.b"]}), "filter.tenant_id"),
            (json!({"tenant_id": ["a*"]}), "filter.tenant_id"),
            (json!({"tenant_id": ["a b"]}), "filter.tenant_id"),
            (json!({"tenant_id": [">"]}), "filter.tenant_id"),
            (json!({"tenant_id": [""]}), "filter.tenant_id"),
            (json!({"channel_id": ["c.1"]}), "filter.channel_id"),
            (json!({"channel_id": [long.clone()]}), "filter.channel_id"),
            (json!({"kind": many.iter().map(|_| "message").collect::<Vec<_>>()}), "filter.kind"),
            (json!({"match": []}), "filter.match"),
            (json!({"match": {"message.type": {"$gtx": 1}}}), "filter.match.message.type.$gtx"),
            (json!({"match": {"message": {"type": {"$regex": "x"}}}}), "filter.match.message.type.$regex"),
            (json!({"match": {"sender.id": {"$in": "55"}}}), "filter.match.sender.id.$in"),
            (json!({"match": {"sender.id": {"$nin": {"a": 1}}}}), "filter.match.sender.id.$nin"),
            (json!({"match": {"sender.id": {"$in": many.clone()}}}), "filter.match.sender.id.$in"),
            (json!({"match": {"sender.id": {"$in": ["ok", long.clone()]}}}), "filter.match.sender.id.$in[1]"),
            (json!({"match": {"sender.id": {"$exists": "yes"}}}), "filter.match.sender.id.$exists"),
            (json!({"match": {"amount": {"$gt": true}}}), "filter.match.amount.$gt"),
            (json!({"match": {"amount": {"$lte": [1]}}}), "filter.match.amount.$lte"),
            (json!({"match": {"amount": {"$gte": null}}}), "filter.match.amount.$gte"),
            (json!({"match": {"amount": {"$lt": long.clone()}}}), "filter.match.amount.$lt"),
            (json!({"match": {"message.id": {"$prefix": 1}}}), "filter.match.message.id.$prefix"),
            (json!({"match": {"message.id": {"$suffix": null}}}), "filter.match.message.id.$suffix"),
            (json!({"match": {"message.text": {"$contains": long.clone()}}}), "filter.match.message.text.$contains"),
            (json!({"match": {"message.text": long.clone()}}), "filter.match.message.text"),
            (json!({"match": {"$or": {"a": 1}}}), "filter.match.$or"),
            (json!({"match": {"$or": []}}), "filter.match.$or"),
            (json!({"match": {"$or": [{"a": 1}, "b"]}}), "filter.match.$or[1]"),
            (json!({"match": {"$or": [{"a": 1}, {}]}}), "filter.match.$or[1]"),
            (json!({"match": {"$or": [{"a": 1}, {"message.type": {"$in": 3}}]}}), "filter.match.$or[1].message.type.$in"),
            (json!({"match": {"$and": [{"x": {"$and": [{"y": {"$bad": 1}}]}}]}}), "filter.match.$and[0].x.$and[0].y.$bad"),
            (json!({"match": {"$not": [{"a": 1}]}}), "filter.match.$not"),
            (json!({"match": {"$not": {}}}), "filter.match.$not"),
            (json!({"match": {"$not": {"a": {"$in": 1}}}}), "filter.match.$not.a.$in"),
            (json!({"match": {"$eq": 1}}), "filter.match.$eq"),
            (json!({"match": {"message..type": "text"}}), "filter.match.message..type"),
            (json!({"match": {".type": "text"}}), "filter.match..type"),
            (json!({"match": {"message.": "text"}}), "filter.match.message."),
            (json!({"match": {"": "text"}}), "filter.match."),
            (json!({"match": {"message.$type": "text"}}), "filter.match.message.$type"),
            (json!({"match": {"message": {}}}), "filter.match.message"),
            (json!({"match": {"a": deep}}), "filter.match.a.k7.k6.k5.k4.k3.k2.k1"),
            (json!({"match": {"a": {"$eq": [[[[[[[[1]]]]]]]]}}}), "filter.match.a.$eq[0][0][0][0][0][0]"),
            (json!({ "match": too_many_ops }), "filter.match.f64"),
            (json!({"match": {"a": {"$eq": {long.clone(): 1}}}}), "filter.match.a.$eq"),
            (json!({ "match": { long.clone(): 1 } }), "filter.match"),
            (json!({ long.clone(): 1 }), "filter"),
        ];
        for (input, field) in cases {
            match Filter::parse(&input) {
                Ok(_) => panic!("{input} should be refused (at {field})"),
                Err(e) => assert_eq!(e.field, field, "{input}: {e}"),
            }
        }
    }

    #[test]
    fn the_limits_themselves_are_accepted() {
        let deepest = (0..MAX_DEPTH - 1).fold(json!("v"), |acc, i| json!({ format!("k{i}"): acc }));
        assert!(Filter::parse(&json!({"match": {"a": deepest}})).is_ok());
        let ops: Map<String, Value> = (0..MAX_OPERATORS).map(|i| (format!("f{i}"), json!(i))).collect();
        assert!(Filter::parse(&json!({ "match": ops })).is_ok());
        let list: Vec<Value> = (0..MAX_LIST_LEN).map(|i| json!(i)).collect();
        assert!(Filter::parse(&json!({"match": {"a": {"$in": list}}})).is_ok());
        assert!(Filter::parse(&json!({"match": {"a": "x".repeat(MAX_STRING_BYTES)}})).is_ok());
    }

    #[test]
    fn errors_read_as_field_and_message() {
        let e = Filter::parse(&json!({"kind": ["mesage"]})).expect_err("refused");
        assert_eq!(
            e.to_string(),
            "filter.kind: entry 0: unknown kind \"mesage\": expected one of message, status, payment, chat_event, other"
        );
    }

    #[test]
    fn a_filter_round_trips_as_the_same_json() {
        for v in [
            json!(null),
            json!({}),
            json!({"kind": ["message"], "tenant_id": [], "match": {"message": {"type": {"$in": ["text"]}}, "$or": [{"a": 1}]}}),
            json!({"source": ["mercadopago"], "match": {"payment.action": {"$prefix": "payment."}}}),
        ] {
            let filter = f(v.clone());
            assert_eq!(serde_json::to_value(&filter).expect("serialize"), v);
            let back: Filter = serde_json::from_value(v.clone()).expect("deserialize");
            assert_eq!(back, filter);
            assert_eq!(back.as_json(), &v);
        }
        let err = serde_json::from_value::<Filter>(json!({"kind": ["x"]})).expect_err("refused");
        assert!(err.to_string().starts_with("filter.kind: "), "{err}");
    }

    fn subjects(v: Value, forced: Option<&str>) -> Vec<String> {
        f(v).subjects(forced)
    }

    #[test]
    fn subjects_are_the_cross_product_with_wildcards() {
        assert_eq!(subjects(json!({}), None), ["hookline.events.*.*.*"]);
        assert_eq!(subjects(json!({"source": ["whatsapp"], "match": {"a": 1}}), None), ["hookline.events.*.*.*"]);
        assert_eq!(subjects(json!({"kind": ["status"]}), None), ["hookline.events.*.*.status"]);
        assert_eq!(
            subjects(json!({"tenant_id": ["b", "a", "b"], "platform": ["whatsapp", "sms"], "kind": ["message"]}), None),
            [
                "hookline.events.a.sms.message",
                "hookline.events.a.whatsapp.message",
                "hookline.events.b.sms.message",
                "hookline.events.b.whatsapp.message",
            ]
        );
        assert_eq!(
            subjects(json!({"kind": ["message", "status", "payment", "chat_event", "other"], "platform": ["telegram"]}), None),
            ["hookline.events.*.telegram.*"],
            "every kind is no constraint"
        );
    }

    #[test]
    fn a_forced_tenant_replaces_or_intersects_the_tenant_list() {
        assert_eq!(subjects(json!({}), Some("acme")), ["hookline.events.acme.*.*"]);
        assert_eq!(subjects(json!({"tenant_id": ["beta", "acme"], "kind": ["payment"]}), Some("acme")), ["hookline.events.acme.*.payment"]);
        assert!(subjects(json!({"tenant_id": ["beta"]}), Some("acme")).is_empty(), "its own tenant excluded: nothing");
        assert!(subjects(json!({}), Some("a.b")).is_empty(), "a tenant that is not subject-safe: nothing");
    }

    #[test]
    fn too_many_subjects_fall_back_to_wildcards_for_the_largest_list() {
        let tenants: Vec<String> = (0..20).map(|i| format!("t{i:02}")).collect();
        let out = subjects(json!({"tenant_id": tenants, "platform": ["whatsapp", "sms"], "kind": ["message", "status"]}), None);
        assert_eq!(
            out,
            [
                "hookline.events.*.sms.message",
                "hookline.events.*.sms.status",
                "hookline.events.*.whatsapp.message",
                "hookline.events.*.whatsapp.status"
            ]
        );
        let out = subjects(json!({"tenant_id": tenants[..16], "platform": ["whatsapp", "sms"], "kind": ["message", "status"]}), None);
        assert_eq!(out.len(), 64, "exactly the cap is kept");
        assert!(out.iter().all(|s| !s.contains('*')));
        let tenants: Vec<String> = (0..100).map(|i| format!("t{i}")).collect();
        let platforms = known_platforms();
        let out = subjects(json!({"tenant_id": tenants, "platform": platforms, "kind": ["message", "status", "payment", "other"]}), None);
        assert_eq!(out.len(), 32, "tenants wildcarded, then 8 platforms × 4 kinds fit");
        assert!(out.iter().all(|s| s.starts_with("hookline.events.*.")));
        let forced =
            subjects(json!({"tenant_id": tenants, "platform": platforms, "kind": ["message", "status", "payment", "other"]}), Some("t5"));
        assert_eq!(forced.len(), 32);
        assert!(forced.iter().all(|s| s.starts_with("hookline.events.t5.")));
        assert!(out.len() <= MAX_SUBJECTS && forced.len() <= MAX_SUBJECTS);
    }

    /// Arbitrary JSON, biased towards the filter's own keys so that the parser goes deep.
    fn arb_json() -> impl Strategy<Value = Value> {
        let key = prop_oneof![
            Just("match".to_string()),
            Just("kind".to_string()),
            Just("tenant_id".to_string()),
            Just("source".to_string()),
            Just("$and".to_string()),
            Just("$or".to_string()),
            Just("$not".to_string()),
            Just("$in".to_string()),
            Just("$nin".to_string()),
            Just("$eq".to_string()),
            Just("$neq".to_string()),
            Just("$gt".to_string()),
            Just("$lte".to_string()),
            Just("$exists".to_string()),
            Just("$prefix".to_string()),
            Just("$contains".to_string()),
            Just("message.type".to_string()),
            Just("amount".to_string()),
            Just("0".to_string()),
            "[a-z$.0-9]{0,6}",
        ];
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<u64>().prop_map(|n| json!(n)),
            any::<f64>().prop_filter("finite", |x| x.is_finite()).prop_map(|n| json!(n)),
            prop_oneof![Just("message".to_string()), Just("text".to_string()), "[ -~]{0,8}"].prop_map(Value::String),
        ];
        leaf.prop_recursive(6, 64, 6, move |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::btree_map(key.clone(), inner, 0..6).prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// Mostly well-formed match objects: paths to bare values, operator objects and sub-filters.
    fn arb_match() -> impl Strategy<Value = Value> {
        let path = prop_oneof![
            Just("message.type"),
            Just("message.tags"),
            Just("message.contacts.0.name"),
            Just("sender.id"),
            Just("amount"),
            Just("ratio"),
            Just("occurred_at"),
            Just("kind"),
            Just("missing.path"),
        ]
        .prop_map(str::to_string);
        let op = prop_oneof![
            Just("$eq"),
            Just("$neq"),
            Just("$in"),
            Just("$nin"),
            Just("$exists"),
            Just("$gt"),
            Just("$gte"),
            Just("$lt"),
            Just("$lte"),
            Just("$prefix"),
            Just("$suffix"),
            Just("$contains"),
        ]
        .prop_map(str::to_string);
        let scalar = prop_oneof![
            any::<bool>().prop_map(Value::Bool),
            (-200i64..200).prop_map(|n| json!(n)),
            (-2.0f64..2.0).prop_map(|n| json!(n)),
            prop_oneof![Just("text"), Just("vip"), Just("55"), Just("2026-03-01"), Just("")].prop_map(|s| json!(s)),
        ];
        let operand = prop_oneof![scalar.clone(), proptest::collection::vec(scalar.clone(), 0..4).prop_map(Value::Array)];
        let ops = proptest::collection::btree_map(op, operand, 1..3).prop_map(|m| Value::Object(m.into_iter().collect()));
        let test = proptest::collection::btree_map(path.clone(), prop_oneof![scalar, ops], 1..3)
            .prop_map(|m| Value::Object(m.into_iter().collect()));
        test.prop_recursive(4, 32, 4, move |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 1..4).prop_map(|v| json!({ "$or": v })),
                proptest::collection::vec(inner.clone(), 1..4).prop_map(|v| json!({ "$and": v })),
                inner.clone().prop_map(|v| json!({ "$not": v })),
                (path.clone(), inner).prop_map(|(p, v)| json!({ p: v })),
            ]
        })
    }

    proptest! {
        #[test]
        fn well_formed_filters_parse_and_evaluate_consistently(m in arb_match(), ev in arb_json()) {
            // Operand types are random ($exists: 5, $in: "x") and a filter may pass the limits,
            // so some are refused: never a panic.
            let filter = Filter::parse(&json!({ "match": m }));
            let negated = Filter::parse(&json!({"match": {"$not": m}}));
            if let (Ok(filter), Ok(negated)) = (filter, negated) {
                prop_assert_eq!(negated.matches(&event()), !filter.matches(&event()), "$not negates");
                prop_assert_eq!(negated.matches(&ev), !filter.matches(&ev), "$not negates");
                prop_assert_eq!(filter.matches(&ev), filter.matches(&ev), "evaluation is deterministic");
            }
        }

        #[test]
        fn parse_never_panics_and_what_parses_never_panics_on_any_event(filter in arb_json(), ev in arb_json()) {
            let _ = Filter::parse(&filter);
            if let Ok(parsed) = Filter::parse(&json!({"match": filter})) {
                let _ = parsed.matches(&ev);
                let _ = parsed.matches(&event());
                let _ = parsed.subjects(Some("acme"));
                prop_assert_eq!(serde_json::to_value(&parsed).ok(), Some(parsed.as_json().clone()));
            }
        }
    }
}
