//! A commit is acknowledged once durable and applied after (commit.rs, `finish_group`), so the
//! writer's next batch is encoded while the last one is applied. No read that follows the
//! acknowledgement may see the state before it: the commit thread takes the state's write lock
//! before acknowledging and holds it until the record is applied.

use std::sync::mpsc;
use std::time::Duration;

use cairn_core::batch::{self, CollectionSpec, Op};
use cairn_core::distance::Metric;
use cairn_core::engine::{Engine, Options};
use cairn_core::shared_vector::SharedVector;

#[test]
fn reads_right_after_an_acknowledgement_see_the_whole_batch() {
    let dir = std::env::temp_dir().join(format!("cairn-ack-then-apply-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let engine = Engine::open(&dir, Options::default()).expect("open");
    let spec = CollectionSpec { name: "c".into(), dim: 4, metric: Metric::L2, m: 16, ef_construction: 100 };
    engine.commit(&[Op::CreateCollection(spec)]).expect("create");
    // Large enough that applying it takes far longer than a thread takes to wake: a read let
    // in before the apply finished would miss the last rows.
    let n = 60_000;
    for round in 0..3 {
        let ops: Vec<Op> = (0..n)
            .map(|i| Op::Upsert {
                collection: "c".into(),
                id: format!("r{round}-{i}"),
                vector: SharedVector::from_slice(&[i as f32, round as f32, 0.0, 1.0]),
                metadata: format!("{{\"i\":{i}}}").into(),
            })
            .collect();
        let (tx, rx) = mpsc::channel();
        engine.submit(
            batch::encode(&ops),
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        let seq = rx.recv_timeout(Duration::from_secs(60)).expect("acknowledged").expect("committed");
        assert!(engine.last_seq() >= seq, "last_seq {} behind an acknowledged seq {seq}", engine.last_seq());
        let last = engine.get("c", &format!("r{round}-{}", n - 1)).expect("get");
        let (vector, metadata) = last.expect("the batch's last row is visible as soon as it is acknowledged");
        assert_eq!(vector, vec![(n - 1) as f32, round as f32, 0.0, 1.0]);
        assert_eq!(metadata, format!("{{\"i\":{}}}", n - 1));
        assert_eq!(engine.count("c").expect("count"), (round + 1) * n);
    }
    drop(engine);
    let _ = std::fs::remove_dir_all(&dir);
}
