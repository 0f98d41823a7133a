//! The names of a store's files and directories, from `cairn_core::layout` (the one spelling).

use cairn_core::layout as l;
use napi_derive::napi;

#[napi(object)]
pub struct NativeLayout {
    pub lock: String,
    pub manifest: String,
    pub manifest_copy: String,
    pub wal: String,
    pub archive: String,
    pub data: String,
    pub snapshots: String,
    pub snapshot_manifest: String,
    pub quarantine: String,
    pub rollback: String,
    pub note_suffix: String,
    pub scrub_result: String,
    pub tmp_suffix: String,
    pub install_suffix: String,
    pub wal_ext: String,
    pub data_ext: String,
    pub graph_ext: String,
    pub payload_ext: String,
}

#[napi]
pub fn layout() -> NativeLayout {
    NativeLayout {
        lock: l::LOCK_FILE.into(),
        manifest: l::MANIFEST_FILE.into(),
        manifest_copy: l::MANIFEST_COPY_FILE.into(),
        wal: l::WAL_DIR.into(),
        archive: l::ARCHIVE_DIR.into(),
        data: l::DATA_DIR.into(),
        snapshots: l::SNAPSHOTS_DIR.into(),
        snapshot_manifest: l::SNAPSHOT_FILE.into(),
        quarantine: l::QUARANTINE_DIR.into(),
        rollback: l::ROLLBACK_DIR.into(),
        note_suffix: l::NOTE_SUFFIX.into(),
        scrub_result: l::SCRUB_RESULT_FILE.into(),
        tmp_suffix: l::TMP_SUFFIX.into(),
        install_suffix: l::INSTALL_SUFFIX.into(),
        wal_ext: l::WAL_EXT.into(),
        data_ext: l::DATA_EXT.into(),
        graph_ext: l::GRAPH_EXT.into(),
        payload_ext: l::PAYLOAD_EXT.into(),
    }
}
