//! Ordered delivery end to end, with processes: 200 conversations x 8 messages, each sent once
//! the previous one of its conversation was answered 200, through 2 normalizers and 2 forwarders
//! to an ordered destination and its unordered twin, both targets answering 500 to a third of
//! the deliveries at random, and the ordered destination's owner SIGKILLed mid-run (and started
//! again). The order is checked against the send order (the message ids the run wrote). The long
//! form is `hookline bench e2e --ordering conversation`.

use std::time::Duration;

use hookline_bench::ordered::{self, OrderedOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_conversation_arrives_complete_and_in_order_through_retries_two_normalizers_and_a_killed_forwarder() {
    let opts = OrderedOptions {
        conversations: 200,
        messages: 8,
        concurrency: 32,
        normalizers: 2,
        forwarders: 2,
        fail_ratio: Some(0.33),
        kill_forwarder: true,
        max_duration: Duration::from_secs(60),
        binary: Some(env!("CARGO_BIN_EXE_hookline").into()),
        fsync: hookline_shared::servers::Fsync::Always,
    };
    let report = ordered::run(&opts).await.expect("run");
    eprintln!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
    assert_eq!(report.answered_200, 1600, "every message must be sent: {:?}", report.notes);
    assert!(
        report.notes.iter().any(|n| n.contains("the ordered destination's owner") && n.contains("SIGKILLed")),
        "the owner of the ordered destination must be the one killed: {:?}",
        report.notes
    );
    assert_eq!(report.dead_lettered, 0);
    let (o, u) = (&report.ordered, &report.unordered);
    assert_eq!((o.delivered, o.missing), (1600, 0), "the ordered destination must get every message");
    assert_eq!(o.out_of_order, 0, "the ordered destination got {} deliveries out of order", o.out_of_order);
    // The twin got everything too, and shows the disorder that ordering prevents (retries alone
    // reorder a conversation).
    assert_eq!(u.missing, 0);
    assert!(u.out_of_order > 0, "the unordered twin saw no disorder: the run did not exercise ordering");
}
