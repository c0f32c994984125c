//! `cargo xtask boundaries`: the invariants of `ARCHITECTURE.md` that `cargo tree` and the
//! sources can prove, checked so that they hold by the build and not by habit.
//!
//! Each rule is named; a failure prints the rule, what broke it, and exits non-zero. CI runs
//! the task after clippy.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use crate::Result;

/// Our crates and the only crates of ours each may depend on (normal dependencies). Tests,
/// test support, the benchmark and xtask may use anything.
pub(crate) const LAYERS: &[(&str, &[&str])] = &[
    ("iothub-auth", &[]),
    ("iothub-rest-gen", &["iothub-auth"]),
    ("iothub-amqp", &["iothub-auth"]),
    (
        "iothub-registry",
        &["iothub-rest-gen", "iothub-amqp", "iothub-auth"],
    ),
    ("iothub-emulator", &["iothub-rest-gen"]),
];

/// What the emulator must not link without its default features: it uses the generated
/// models, never the generated client or our credentials.
const EMULATOR_NEVER: &[&str] = &["reqwest", "progenitor-client", "azure_core", "iothub-auth"];

/// What the registry must not link without its default features: REST only, no AMQP.
const REGISTRY_REST_ONLY_NEVER: &[&str] = &["iothub-amqp", "fe2o3-amqp"];

/// Crates that must build without their default features, and what that build is.
const WITHOUT_DEFAULT_FEATURES: &[(&str, &str)] = &[
    (
        "iothub-rest-gen",
        "models only (without its client feature)",
    ),
    ("iothub-registry", "REST only (without its amqp feature)"),
];

/// Crates with exactly these direct dependents (normal edges), workspace-wide.
const CONFINED: &[(&str, &[&str])] = &[
    ("progenitor-client", &["iothub-rest-gen"]),
    ("fe2o3-amqp", &["iothub-amqp", "iothub-emulator"]),
];

/// Never anywhere in the workspace, any kind of dependency: TLS is rustls on aws-lc-rs.
const BANNED_EVERYWHERE: &[&str] = &["openssl-sys", "native-tls"];

/// Never in a library crate's own build (a second rustls provider leaves rustls without a
/// process default).
const BANNED_IN_LIBRARIES: &[&str] = &["ring"];

/// Source rules: (rule, crate directory, text that must not appear in its `src/`, the one
/// subdirectory of `src/` where it may).
const SOURCE_RULES: &[(&str, &str, &str, Option<&str>)] = &[
    (
        "progenitor types are named only in iothub-rest-gen",
        "crates/iothub-registry",
        "progenitor_client",
        None,
    ),
    (
        "progenitor types are named only in iothub-rest-gen",
        "crates/iothub-amqp",
        "progenitor_client",
        None,
    ),
    (
        "progenitor types are named only in iothub-rest-gen",
        "crates/iothub-emulator",
        "progenitor_client",
        None,
    ),
    (
        "fe2o3 is used only in the emulator's AMQP module",
        "crates/iothub-emulator",
        "fe2o3",
        Some("amqp"),
    ),
    (
        "rumqttc is used only in the emulator's MQTT module",
        "crates/iothub-emulator",
        "rumqttc",
        Some("mqtt"),
    ),
    (
        "the emulator uses the generated models, never the generated client",
        "crates/iothub-emulator",
        "iothub_rest_gen::Client",
        None,
    ),
];

pub(crate) fn run(root: &Path) -> Result<()> {
    let mut failures = String::new();
    let mut check = |rule: &str, result: Result<()>| match result {
        Ok(()) => println!("ok: {rule}"),
        Err(why) => {
            println!("FAILED: {rule}: {why}");
            let _ = writeln!(failures, "{rule}: {why}");
        }
    };

    for (krate, allowed) in LAYERS {
        let tree = tree(root, &["-p", krate, "-e", "normal"])?;
        check(
            &format!("{krate} depends only on {allowed:?} among our crates"),
            ours_outside(&tree, krate, allowed),
        );
    }
    let emulator = tree(
        root,
        &[
            "-p",
            "iothub-emulator",
            "-e",
            "normal",
            "--no-default-features",
        ],
    )?;
    check(
        "the emulator without default features links no HTTP client or credential",
        absent(&emulator, EMULATOR_NEVER),
    );
    let rest_only = tree(
        root,
        &[
            "-p",
            "iothub-registry",
            "-e",
            "normal",
            "--no-default-features",
        ],
    )?;
    check(
        "the registry without default features links no AMQP",
        absent(&rest_only, REGISTRY_REST_ONLY_NEVER),
    );
    for (krate, dependents) in CONFINED {
        let inverted = cargo_tree(
            root,
            &[
                "--workspace",
                "-i",
                krate,
                "-e",
                "normal",
                "--depth",
                "1",
                "--prefix",
                "depth",
            ],
        )?;
        check(
            &format!("only {dependents:?} depend on {krate}"),
            direct_dependents_are(&inverted, dependents),
        );
    }
    let everything = tree(root, &["--workspace", "-e", "all"])?;
    check(
        "no OpenSSL anywhere",
        absent(&everything, BANNED_EVERYWHERE),
    );
    for (krate, _) in LAYERS {
        let tree = tree(root, &["-p", krate, "-e", "normal,build"])?;
        check(
            &format!("{krate} builds without {BANNED_IN_LIBRARIES:?}"),
            absent(&tree, BANNED_IN_LIBRARIES),
        );
    }
    // One package per build: features unify across the packages of one cargo invocation.
    for (krate, what) in WITHOUT_DEFAULT_FEATURES {
        let built = Command::new(cargo())
            .current_dir(root)
            .args(["check", "--quiet", "-p", krate, "--no-default-features"])
            .status()
            .map_err(|e| format!("cannot run cargo: {e}"))?;
        check(
            &format!("{krate} builds {what}"),
            if built.success() {
                Ok(())
            } else {
                Err(format!(
                    "cargo check -p {krate} --no-default-features failed"
                ))
            },
        );
    }
    for (rule, dir, needle, allowed_under) in SOURCE_RULES {
        check(
            &format!("{rule} ({dir})"),
            source_free_of(&root.join(dir).join("src"), needle, *allowed_under),
        );
    }

    if failures.is_empty() {
        Ok(())
    } else {
        Err(format!("boundaries broken:\n{failures}"))
    }
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned())
}

fn cargo_tree(root: &Path, args: &[&str]) -> Result<String> {
    let output = Command::new(cargo())
        .current_dir(root)
        .arg("tree")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run cargo tree: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "cargo tree {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    String::from_utf8(output.stdout).map_err(|e| format!("cargo tree printed non-UTF-8: {e}"))
}

/// The package names in a tree (`--prefix none --format {p}`).
fn tree(root: &Path, args: &[&str]) -> Result<BTreeSet<String>> {
    let mut all = args.to_vec();
    all.extend(["--prefix", "none", "--format", "{p}"]);
    Ok(package_names(&cargo_tree(root, &all)?))
}

pub(crate) fn package_names(output: &str) -> BTreeSet<String> {
    output
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// Our crates (`iothub-*`) in `tree` other than `krate` itself and `allowed`.
pub(crate) fn ours_outside(tree: &BTreeSet<String>, krate: &str, allowed: &[&str]) -> Result<()> {
    let extra: Vec<&String> = tree
        .iter()
        .filter(|name| name.starts_with("iothub-"))
        .filter(|name| *name != krate && !allowed.contains(&name.as_str()))
        .collect();
    if extra.is_empty() {
        Ok(())
    } else {
        Err(format!("it also depends on {extra:?}"))
    }
}

pub(crate) fn absent(tree: &BTreeSet<String>, banned: &[&str]) -> Result<()> {
    let found: Vec<&&str> = banned.iter().filter(|b| tree.contains(**b)).collect();
    if found.is_empty() {
        Ok(())
    } else {
        Err(format!("found {found:?} (see `cargo tree -i <name>`)"))
    }
}

/// Checks the depth-1 lines of `cargo tree -i X --depth 1 --prefix depth`.
pub(crate) fn direct_dependents_are(output: &str, expected: &[&str]) -> Result<()> {
    let actual: BTreeSet<&str> = output
        .lines()
        .filter_map(|line| line.strip_prefix('1'))
        .filter_map(|rest| rest.split_whitespace().next())
        .collect();
    let expected: BTreeSet<&str> = expected.iter().copied().collect();
    if actual == expected {
        Ok(())
    } else {
        Err(format!("direct dependents are {actual:?}"))
    }
}

/// No `.rs` file under `src` mentions `needle`, except under `src/<allowed_under>/`.
pub(crate) fn source_free_of(src: &Path, needle: &str, allowed_under: Option<&str>) -> Result<()> {
    let allowed = allowed_under.map(|dir| src.join(dir));
    let mut offenders = Vec::new();
    let mut pending = vec![src.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries =
            std::fs::read_dir(&dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
        for entry in entries {
            let path = entry.map_err(|e| e.to_string())?.path();
            if allowed.as_ref().is_some_and(|a| path.starts_with(a)) {
                continue;
            }
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                if text.contains(needle) {
                    offenders.push(path.display().to_string());
                }
            }
        }
    }
    offenders.sort();
    if offenders.is_empty() {
        Ok(())
    } else {
        Err(format!("`{needle}` appears in {offenders:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(text: &str) -> BTreeSet<String> {
        package_names(text)
    }

    #[test]
    fn our_crates_outside_the_allowed_layer_are_reported() {
        let tree = names(
            "iothub-emulator v0.1.0 (/w/crates/iothub-emulator)\n\
             iothub-rest-gen v0.1.0 (/w/crates/iothub-rest-gen)\n\
             serde v1.0.0\n\
             iothub-auth v0.1.0 (/w/crates/iothub-auth) (*)\n",
        );
        let err = ours_outside(&tree, "iothub-emulator", &["iothub-rest-gen"]).unwrap_err();
        assert!(err.contains("iothub-auth"), "{err}");
        assert!(
            ours_outside(
                &tree,
                "iothub-emulator",
                &["iothub-rest-gen", "iothub-auth"]
            )
            .is_ok()
        );
    }

    #[test]
    fn banned_crates_are_found_by_exact_name() {
        let tree = names("reqwest v0.13.0\nreqwest-middleware v0.4.0\n");
        assert!(absent(&tree, &["reqwest"]).is_err());
        assert!(absent(&tree, &["req"]).is_ok());
    }

    #[test]
    fn direct_dependents_come_from_depth_one() {
        let output = "0fe2o3-amqp v0.18.4\n\
                      1iothub-amqp v0.1.0 (/w/crates/iothub-amqp)\n\
                      2iothub-registry v0.1.0 (/w/crates/iothub-registry)\n\
                      1iothub-emulator v0.1.0 (/w/crates/iothub-emulator)\n";
        assert!(direct_dependents_are(output, &["iothub-amqp", "iothub-emulator"]).is_ok());
        let err = direct_dependents_are(output, &["iothub-amqp"]).unwrap_err();
        assert!(err.contains("iothub-emulator"), "{err}");
    }

    #[test]
    fn source_rules_see_files_outside_the_allowed_folder_only() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path();
        std::fs::create_dir_all(src.join("amqp")).unwrap();
        std::fs::write(src.join("amqp/link.rs"), "use fe2o3_amqp::Link;").unwrap();
        std::fs::write(src.join("lib.rs"), "mod amqp;").unwrap();
        assert!(source_free_of(src, "fe2o3", Some("amqp")).is_ok());
        std::fs::write(src.join("hub.rs"), "// fe2o3 sneaks in").unwrap();
        let err = source_free_of(src, "fe2o3", Some("amqp")).unwrap_err();
        assert!(err.contains("hub.rs"), "{err}");
    }

    #[test]
    fn the_layers_point_downward() {
        // A crate may only depend on crates listed before it: no cycles, no upward edges.
        for (i, (krate, allowed)) in LAYERS.iter().enumerate() {
            for dependency in *allowed {
                let position = LAYERS.iter().position(|(name, _)| name == dependency);
                assert!(
                    position.is_some_and(|p| p < i),
                    "{krate} -> {dependency} does not point downward"
                );
            }
        }
    }
}
