//! Dependencies run one way: every crate of the workspace sits on a layer, and may depend
//! only on crates of lower layers (docs/architecture.md draws the same picture). A back edge
//! (the model crate importing training code, data importing the experiment runner) fails
//! here, in CI, before it is built upon.

use std::collections::BTreeMap;

/// Each crate's layer, lowest first. A new crate gets its place here and in
/// docs/architecture.md.
const LAYERS: &[(&str, u32)] = &[
    ("autoneural-io", 0),
    ("autoneural-model", 1),
    ("autoneural-data", 2),
    ("autoneural-export", 2),
    ("autoneural-train", 3),
    ("autoneural-npu", 3),
    ("autoneural-eval", 4),
    ("autoneural-benchmarks", 4),
    ("autoneural-quant", 5),
    ("autoneural-experiments", 6),
    ("autoneural", 7),
];

fn manifest(path: &str) -> toml::Table {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.parse().unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The workspace crates `table` (a `[dependencies]` or `[dev-dependencies]`) names.
fn workspace_deps(table: Option<&toml::Value>) -> Vec<String> {
    table
        .and_then(|t| t.as_table())
        .map(|t| t.keys().filter(|k| k.starts_with("autoneural")).cloned().collect())
        .unwrap_or_default()
}

#[test]
fn dependencies_run_one_way() {
    let layers: BTreeMap<&str, u32> = LAYERS.iter().copied().collect();
    let root = manifest("Cargo.toml");
    let members: Vec<String> =
        root["workspace"]["members"].as_array().unwrap().iter().map(|m| m.as_str().unwrap().to_string()).collect();
    let mut back_edges = Vec::new();
    for member in &members {
        let m = if member == "." { root.clone() } else { manifest(&format!("{member}/Cargo.toml")) };
        let name = m["package"]["name"].as_str().unwrap().to_string();
        let Some(&layer) = layers.get(name.as_str()) else {
            panic!("{name} has no layer in tests/layers.rs (and docs/architecture.md): give it one");
        };
        for section in ["dependencies", "dev-dependencies"] {
            for dep in workspace_deps(m.get(section)) {
                let dep_layer = layers[dep.as_str()];
                if dep_layer >= layer {
                    back_edges.push(format!("{name} (layer {layer}) -> {dep} (layer {dep_layer}) in [{section}]"));
                }
            }
        }
    }
    assert!(back_edges.is_empty(), "dependencies must point to lower layers:\n  {}", back_edges.join("\n  "));
    assert_eq!(members.len(), LAYERS.len(), "every crate of the workspace has a layer, and only those");
}
