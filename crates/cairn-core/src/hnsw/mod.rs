//! HNSW index (see graph.rs, build.rs, search.rs, persist.rs).
