//! Filtered k-NN on clustered data at the size issue 15 names (a gaussian mixture, 100k x 128,
//! 50 clusters; about a minute of CPU, `CAIRN_RECALL_ROWS=20000` for a quick run): recall@10 at
//! ef = 64 against the exact filtered answer, for filters matching 50%, 10%, 1% and 0.1% of rows,
//! without and then with a payload index on the filtered field.
//! Every query must also return min(k, matching rows) results: the search keeps expanding past
//! rows the filter rejects. A filter matching 3 rows returns exactly those 3.

mod common;

use std::path::Path;
use std::sync::Arc;

use cairn_core::batch::{CollectionSpec, Op};
use cairn_core::distance::Metric;
use cairn_core::engine::{Engine, Options};
use cairn_core::fault::FaultStorage;
use cairn_core::filter::Filter;
use cairn_core::payload::IndexKind;
use cairn_core::wal::writer::Prealloc;
use common::mixture::Mixture;

const DEFAULT_ROWS: usize = 100_000;

/// Rows to load: `CAIRN_RECALL_ROWS`, else `DEFAULT_ROWS` (a multiple of the 2,000-row chunk).
fn rows() -> usize {
    match std::env::var("CAIRN_RECALL_ROWS") {
        Ok(v) => {
            let n: usize = v.parse().expect("CAIRN_RECALL_ROWS must be a whole number");
            assert!(n >= 6_000 && n.is_multiple_of(2_000), "CAIRN_RECALL_ROWS must be a multiple of 2000, at least 6000 (got {n})");
            n
        }
        Err(_) => DEFAULT_ROWS,
    }
}

/// The three "rare" rows: far apart in id, and so in the graph.
fn rare_ids(n: usize) -> [usize; 3] {
    [7, n / 3 + 7, 2 * n / 3 + 7]
}
const DIM: usize = 128;
const CLUSTERS: usize = 50;
const QUERIES: usize = 100;
const K: usize = 10;
const EF: usize = 64;

/// (filter JSON, share of rows it should match)
const FILTERS: [(&str, f64); 4] =
    [(r#"{"b": {"$lt": 500}}"#, 0.5), (r#"{"b": {"$lt": 100}}"#, 0.1), (r#"{"b": {"$lt": 10}}"#, 0.01), (r#"{"b": 0}"#, 0.001)];

fn recall_per_filter(e: &Engine, queries: &[Vec<f32>], n: usize) -> Vec<(f64, f64)> {
    FILTERS
        .iter()
        .map(|(json, _)| {
            let f = Filter::parse(json).expect("filter");
            let matching = e.count_where("c", &f).expect("count");
            let (mut hit, mut total) = (0usize, 0usize);
            for q in queries {
                let exact = e.query_exact("c", q, K, Some(&f)).expect("exact");
                let approx = e.query("c", q, K, EF, Some(&f)).expect("query");
                assert_eq!(approx.hits.len(), K.min(matching), "{json}: k results whenever k rows match");
                total += exact.hits.len();
                hit += approx.hits.iter().filter(|h| exact.hits.iter().any(|x| x.0 == h.0)).count();
            }
            (matching as f64 / n as f64, hit as f64 / total as f64)
        })
        .collect()
}

fn three_rare_rows_come_back_exactly(e: &Engine, queries: &[Vec<f32>], n: usize) {
    let f = Filter::parse(r#"{"rare": true}"#).expect("filter");
    assert_eq!(e.count_where("c", &f).expect("count"), 3);
    for q in &queries[..10] {
        let mut ids: Vec<String> = e.query("c", q, K, EF, Some(&f)).expect("query").hits.into_iter().map(|h| h.0).collect();
        ids.sort();
        let want: Vec<String> = rare_ids(n).iter().map(|i| format!("r{i:06}")).collect();
        assert_eq!(ids, want);
    }
}

#[test]
fn filtered_recall_at_every_selectivity_with_and_without_an_index() {
    let opts = Options { storage: Arc::new(FaultStorage::new()), prealloc: Prealloc::Off, ..Options::default() };
    let e = Engine::open(Path::new("/store"), opts).expect("open");
    e.commit(&[Op::CreateCollection(CollectionSpec {
        name: "c".into(),
        dim: DIM as u32,
        metric: Metric::L2,
        m: 16,
        ef_construction: 200,
    })])
    .expect("create");
    let mut mixture = Mixture::new(42, CLUSTERS, DIM);
    let n_rows = rows();
    let rare = rare_ids(n_rows);
    for chunk in 0..n_rows / 2_000 {
        let ops: Vec<Op> = (0..2_000)
            .map(|i| {
                let bucket = mixture.rng.next_u64() % 1_000;
                let n = chunk * 2_000 + i;
                let rare = if rare.contains(&n) { r#", "rare": true"# } else { "" };
                Op::Upsert {
                    collection: "c".into(),
                    id: format!("r{n:06}"),
                    vector: mixture.point().into(),
                    metadata: format!(r#"{{"b": {bucket}, "tag": "t{}"{rare}}}"#, bucket % 7).into(),
                }
            })
            .collect();
        e.commit(&ops).expect("upsert");
    }
    e.wait_for_index("c").expect("indexed");
    let queries = mixture.sample(QUERIES);

    let plain = recall_per_filter(&e, &queries, n_rows);
    three_rare_rows_come_back_exactly(&e, &queries, n_rows);
    e.create_index("c", "b", IndexKind::Number).expect("index");
    e.create_index("c", "rare", IndexKind::Bool).expect("index");
    assert_eq!(e.indexes("c").expect("indexes")[0].entries, n_rows);
    let indexed = recall_per_filter(&e, &queries, n_rows);
    three_rare_rows_come_back_exactly(&e, &queries, n_rows);
    for (i, (json, share)) in FILTERS.iter().enumerate() {
        for (what, (matched, recall)) in [("no index", plain[i]), ("index", indexed[i])] {
            eprintln!("{json} ({what}): matches {:.2}% of rows, recall@{K} {recall:.3}", matched * 100.0);
            assert!((matched - share).abs() < share * 0.5 + 0.0005, "{json}: matched {matched}, expected about {share}");
            assert!(recall >= 0.95, "{json} ({what}): recall@{K} {recall} at ef {EF}");
        }
    }
    e.close().expect("close");
}
