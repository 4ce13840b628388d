//! fleetctl links no server code: neither its manifest nor anything it
//! reaches in the workspace's Cargo.lock is sqlx, axum, rumqttc or rcgen.
//! (`cargo tree -p fleetctl -e normal` says the same, at the cost of a
//! cargo run; this reads the files.)

use std::collections::{BTreeMap, BTreeSet};

const SERVER_CRATES: [&str; 4] = ["sqlx", "axum", "rumqttc", "rcgen"];

fn read(path: &str) -> String {
    let path = format!("{}/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn is_server_crate(name: &str) -> bool {
    SERVER_CRATES
        .iter()
        .any(|s| name == *s || name.starts_with(&format!("{s}-")))
}

/// The names declared in the manifest's dependency tables.
fn declared(manifest: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut in_deps = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_deps = line.ends_with("dependencies]");
            continue;
        }
        if in_deps && !line.is_empty() && !line.starts_with('#') {
            let name = line.split(['=', '.']).next().unwrap_or("").trim();
            names.push(name.to_owned());
        }
    }
    names
}

#[test]
fn the_manifest_declares_no_server_crate() {
    let names = declared(&read("Cargo.toml"));
    assert!(
        names.iter().any(|n| n == "fleet-api"),
        "the manifest was read: {names:?}"
    );
    let bad: Vec<&String> = names.iter().filter(|n| is_server_crate(n)).collect();
    assert!(
        bad.is_empty(),
        "server crates in fleetctl/Cargo.toml: {bad:?}"
    );
}

/// Package name to the names of its dependencies, from Cargo.lock.
fn lock_graph(lock: &str) -> BTreeMap<String, Vec<String>> {
    let mut graph = BTreeMap::new();
    for package in lock.split("[[package]]").skip(1) {
        let mut name = None;
        let mut deps = Vec::new();
        let mut in_deps = false;
        for line in package.lines().map(str::trim) {
            if let Some(n) = line.strip_prefix("name = ") {
                name = Some(n.trim_matches('"').to_owned());
            } else if line.starts_with("dependencies = [") {
                in_deps = true;
            } else if in_deps && line == "]" {
                in_deps = false;
            } else if in_deps {
                // `"name"` or `"name version"` or `"name version (source)"`
                let dep = line
                    .trim_matches([',', '"'])
                    .split(' ')
                    .next()
                    .unwrap_or("");
                deps.push(dep.to_owned());
            }
        }
        if let Some(name) = name {
            graph.entry(name).or_insert_with(Vec::new).extend(deps);
        }
    }
    graph
}

/// Every package `root` reaches.
fn reached(graph: &BTreeMap<String, Vec<String>>, root: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut todo = vec![root.to_owned()];
    while let Some(p) = todo.pop() {
        if seen.insert(p.clone()) {
            todo.extend(graph.get(&p).into_iter().flatten().cloned());
        }
    }
    seen
}

#[test]
fn nothing_fleetctl_reaches_in_the_lock_file_is_a_server_crate() {
    let graph = lock_graph(&read("../Cargo.lock"));
    // The walk does find server crates where they are.
    let controller = reached(&graph, "fleet-controller");
    assert!(
        controller.contains("sqlx") && controller.contains("axum"),
        "{controller:?}"
    );
    let seen = reached(&graph, "fleetctl");
    for must in [
        "fleetctl",
        "fleet-api",
        "fleet-protocol",
        "reqwest",
        "qrcode",
    ] {
        assert!(seen.contains(must), "{must} not reached: {seen:?}");
    }
    let bad: Vec<&String> = seen.iter().filter(|n| is_server_crate(n)).collect();
    assert!(bad.is_empty(), "fleetctl reaches {bad:?}");
}
