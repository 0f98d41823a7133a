//! The one mapping of engine errors to JavaScript: an `Error` whose `code` is the stable
//! `CAIRN_*` string and whose `file`, `offset`, `collection` and `id` are real properties.
//! `file`/`offset` (and a conflict's `collection`, `id` and `seq`) come from the engine error;
//! otherwise `collection`/`id` come from the call's arguments.
//! TypeScript builds its `CairnError` from these properties, never from the message.

use std::panic::{catch_unwind, AssertUnwindSafe};

use napi::{Env, JsUnknown, NapiRaw, NapiValue, Status};

/// An error on its way to JavaScript. Boxed: every `Outcome` carries one in its `Err` side.
#[derive(Debug)]
pub struct Failure(Box<Details>);

#[derive(Debug)]
struct Details {
    code: &'static str,
    message: String,
    file: Option<String>,
    offset: Option<u64>,
    collection: Option<String>,
    id: Option<String>,
    /// The seq a conflict names (the write after the transaction's snapshot).
    seq: Option<u64>,
}

impl From<cairn_core::Error> for Failure {
    fn from(e: cairn_core::Error) -> Failure {
        use cairn_core::Error as E;
        let (file, offset) = match &e {
            E::Corruption { file, offset, .. } | E::ChecksumMismatch { file, offset, .. } => {
                (Some(file.display().to_string()), Some(*offset))
            }
            E::Io { path, .. } => (Some(path.display().to_string()), None),
            _ => (None, None),
        };
        let (collection, id, seq) = match &e {
            E::Conflict { collection, id, seq, .. } => (Some(collection.clone()), Some(id.clone()), Some(*seq)),
            _ => (None, None, None),
        };
        Failure(Box::new(Details { code: e.code(), message: e.to_string(), file, offset, collection, id, seq }))
    }
}

impl Failure {
    fn new(code: &'static str, message: String) -> Failure {
        Failure(Box::new(Details { code, message, file: None, offset: None, collection: None, id: None, seq: None }))
    }

    pub fn message(&self) -> &str {
        &self.0.message
    }

    pub fn invalid(message: impl Into<String>) -> Failure {
        Failure::new("CAIRN_INVALID_ARGUMENT", message.into())
    }

    /// Damaged bytes handed over as a buffer, so no file to name.
    pub fn corrupt(offset: u64, message: impl Into<String>) -> Failure {
        let mut f = Failure::new("CAIRN_CORRUPTION", message.into());
        f.0.offset = Some(offset);
        f
    }

    pub fn internal(message: impl Into<String>) -> Failure {
        Failure::new("CAIRN_INTERNAL", message.into())
    }

    /// The collection the failed call named (kept if the engine error already set one).
    pub fn in_collection(mut self, name: &str) -> Failure {
        self.0.collection.get_or_insert_with(|| name.to_string());
        self
    }

    pub fn for_id(mut self, id: &str) -> Failure {
        self.0.id.get_or_insert_with(|| id.to_string());
        self
    }

    /// The JavaScript `Error` object, as a `napi::Error` that throws or rejects with it.
    pub fn into_napi(self, env: &Env) -> napi::Error {
        match self.to_js(env) {
            Ok(value) => napi::Error::from(value),
            Err(_) => napi::Error::new(Status::GenericFailure, format!("{}: {}", self.0.code, self.0.message)),
        }
    }

    fn to_js(&self, env: &Env) -> napi::Result<JsUnknown> {
        let d = &self.0;
        let mut err = env.create_error(napi::Error::new(Status::GenericFailure, d.message.clone()))?;
        err.set_named_property("code", env.create_string(d.code)?)?;
        if let Some(f) = &d.file {
            err.set_named_property("file", env.create_string(f)?)?;
        }
        if let Some(o) = d.offset {
            err.set_named_property("offset", env.create_double(o as f64)?)?;
        }
        if let Some(c) = &d.collection {
            err.set_named_property("collection", env.create_string(c)?)?;
        }
        if let Some(i) = &d.id {
            err.set_named_property("id", env.create_string(i)?)?;
        }
        if let Some(seq) = d.seq {
            err.set_named_property("seq", env.create_bigint_from_u64(seq)?)?;
        }
        // SAFETY: a live object value of this env, viewed as unknown.
        Ok(unsafe { JsUnknown::from_raw_unchecked(env.raw(), err.raw()) })
    }
}

pub type Outcome<T> = std::result::Result<T, Failure>;

/// Run binding code, turning a panic into a `CAIRN_INTERNAL` failure instead of aborting Node.
pub fn guarded<T>(f: impl FnOnce() -> Outcome<T>) -> Outcome<T> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| Err(Failure::internal("internal panic in the native engine")))
}

/// `guarded` for a synchronous export: a failure is thrown as the error object.
pub fn sync<T>(env: &Env, f: impl FnOnce() -> Outcome<T>) -> napi::Result<T> {
    guarded(f).map_err(|e| e.into_napi(env))
}

/// Engine code as an `Outcome`.
pub fn core<T>(r: cairn_core::Result<T>) -> Outcome<T> {
    r.map_err(Failure::from)
}
