//! Checks that bytes are a component implementing the world they were loaded as, with errors that say
//! what is wrong in the plugin author's terms.

use std::collections::BTreeSet;

use wasmtime::Engine;
use wasmtime::component::Component;
use wasmtime::component::types::ComponentItem;

use super::{LoadError, PluginKind, article};

/// Rejects anything that is not a WebAssembly component before wasmtime sees it.
pub(crate) fn header(bytes: &[u8]) -> Result<(), LoadError> {
    if bytes.len() < 8 {
        return Err(LoadError::NotWasm("too short to be WebAssembly"));
    }
    if &bytes[..4] != b"\0asm" {
        return Err(LoadError::NotWasm("it does not start with the WebAssembly magic number"));
    }
    // Core modules have version 1 and layer 0; components have layer 1.
    match bytes[4..8] {
        [1, 0, 0, 0] => Err(LoadError::CoreModule),
        [_, _, 1, 0] => Ok(()),
        _ => Err(LoadError::NotWasm("unknown WebAssembly version or layer")),
    }
}

/// Whether the component exports a function named `name` (an optional export such as `allocate-delta`).
pub(crate) fn exports_function(engine: &Engine, component: &Component, name: &str) -> bool {
    component
        .component_type()
        .exports(engine)
        .any(|(exported, item)| exported == name && matches!(item.ty, ComponentItem::ComponentFunc(_)))
}

/// Checks that the component exports every function of `kind`'s world (types are checked when the
/// typed bindings are created from the `InstancePre`).
pub(crate) fn exports(engine: &Engine, component: &Component, kind: PluginKind) -> Result<(), LoadError> {
    let exported: BTreeSet<String> = component
        .component_type()
        .exports(engine)
        .filter(|(_, item)| matches!(item.ty, ComponentItem::ComponentFunc(_)))
        .map(|(name, _)| name.to_string())
        .collect();
    let missing: Vec<&str> =
        kind.required_exports().iter().copied().filter(|name| !exported.contains(*name)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let other = match kind {
        PluginKind::Allocator => PluginKind::Framework,
        PluginKind::Framework => PluginKind::Allocator,
    };
    let looks_like_other = other.required_exports().iter().all(|name| exported.contains(*name));
    let hint = if looks_like_other {
        format!(" (it looks like {} {other} plugin: load it with `--kind {other}`)", article(other))
    } else if exported.is_empty() {
        " (it exports no functions)".to_string()
    } else {
        format!(" (it exports {})", quoted(exported.iter().map(String::as_str)))
    };
    Err(LoadError::MissingExports {
        article: article(kind),
        kind,
        missing: quoted(missing.into_iter()),
        hint,
    })
}

fn quoted<'a>(names: impl Iterator<Item = &'a str>) -> String {
    names.map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
}
