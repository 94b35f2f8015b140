//! mercadopago: not written yet.

use hookline_shared::event::NormalizedEvent;

use crate::{NormalizeError, RawInput};

pub fn parse(_input: &RawInput<'_>) -> Result<Vec<NormalizedEvent>, NormalizeError> {
    Err(NormalizeError::UnsupportedPayload("the mercadopago normalizer is not written yet".into()))
}
