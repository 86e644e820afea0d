//! The deployment files are checked, not just written: the Kubernetes manifests against the
//! Kubernetes schemas (`kubernetes-validate`, strict), the dispatchd.toml inside them by
//! dispatchd itself, the redis.conf inside them by redis-server, and the local replicas script
//! by bash.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `kubernetes-validate`: `$KUBERNETES_VALIDATE`, the copy tests/run.sh installs, or `PATH`.
fn kubernetes_validate() -> PathBuf {
    if let Ok(p) = std::env::var("KUBERNETES_VALIDATE") {
        return PathBuf::from(p);
    }
    let local = repo().join("target/tools/venv/bin/kubernetes-validate");
    if local.exists() {
        return local;
    }
    PathBuf::from("kubernetes-validate")
}

/// The block literal under `key: |` in a manifest (the contents of one ConfigMap entry).
fn embedded(manifest: &str, key: &str) -> String {
    let text = std::fs::read_to_string(repo().join("deploy/k8s").join(manifest)).expect("manifest");
    let mut lines = text.lines().skip_while(|l| l.trim() != format!("{key}: |"));
    lines.next().unwrap_or_else(|| panic!("{key} in {manifest}"));
    let body: Vec<&str> = lines.take_while(|l| l.is_empty() || l.starts_with("    ")).collect();
    body.iter().map(|l| l.strip_prefix("    ").unwrap_or("")).collect::<Vec<_>>().join("\n")
}

#[test]
fn the_kubernetes_manifests_pass_strict_schema_validation() {
    let dir = repo().join("deploy/k8s");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("deploy/k8s")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 2, "manifests in {}", dir.display());
    let out = Command::new(kubernetes_validate())
        .args(["--strict", "--kubernetes-version", "1.30.0"])
        .args(&files)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run kubernetes-validate ({e}): tests/run.sh installs it (pip install kubernetes-validate)")
        });
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    for kind in ["deployment/dispatchd", "service/dispatchd", "poddisruptionbudget/dispatchd", "statefulset/redis"] {
        assert!(text.contains(&format!("passed for resource {kind}")), "{kind} validated:\n{text}");
    }
}

#[test]
fn the_manifest_configuration_is_accepted_by_dispatchd() {
    // The mounted secrets, where the pod would have them (dispatchd checks that they exist).
    let root = std::env::temp_dir().join(format!("dispatchd-k8s-{}", std::process::id()));
    for (path, body) in
        [("auth/jwt.secret", "0123456789abcdef0123456789abcdef"), ("tls/tls.crt", "-"), ("tls/tls.key", "-")]
    {
        let f = root.join(path);
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(f, body).unwrap();
    }
    let toml = embedded("dispatchd.yaml", "dispatchd.toml").replace("/etc/dispatch/", &format!("{}/", root.display()));
    let file = root.join("dispatchd.toml");
    std::fs::write(&file, &toml).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_dispatchd"))
        .arg("--config")
        .arg(&file)
        .arg("--print-config")
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&root);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    assert!(text.contains("health_listen = \"0.0.0.0:8081\""), "{text}");
    assert!(text.contains("url = \"redis://redis:6379\""), "{text}");
}

#[test]
fn the_manifest_redis_configuration_is_accepted_by_redis() {
    let dir = std::env::temp_dir().join(format!("dispatch-k8s-redis-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // The volume is mounted at /data in the pod.
    let conf = embedded("redis.yaml", "redis.conf").replace("dir /data", &format!("dir {}", dir.display()));
    assert!(conf.contains(&format!("dir {}", dir.display())), "the data directory is set");
    std::fs::write(dir.join("redis.conf"), conf).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port().to_string();
    let mut child = Command::new("redis-server")
        .arg(dir.join("redis.conf"))
        .args(["--port", &port, "--bind", "127.0.0.1", "--dir"])
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server (tests/run.sh installs it)");
    let deadline = Instant::now() + Duration::from_secs(10);
    let answer = loop {
        let o = Command::new("redis-cli").args(["-p", &port, "CONFIG", "GET", "appendfsync"]).output().unwrap();
        let s = String::from_utf8_lossy(&o.stdout).to_string();
        if o.status.success() && s.contains("appendfsync") {
            break s;
        }
        assert!(Instant::now() < deadline, "redis-server did not start with the manifest's redis.conf");
        std::thread::sleep(Duration::from_millis(20));
    };
    let policy = Command::new("redis-cli").args(["-p", &port, "CONFIG", "GET", "maxmemory-policy"]).output().unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(answer.contains("everysec"), "{answer}");
    assert!(String::from_utf8_lossy(&policy.stdout).contains("noeviction"));
}

#[test]
fn the_local_replicas_script_parses() {
    let out = Command::new("bash").arg("-n").arg(repo().join("deploy/run-replicas.sh")).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// `deploy/Dockerfile`, linted (no container engine runs here to build it): every instruction is
/// a known one, every stage starts from a pinned base, `COPY --from` names an earlier stage, the
/// runtime stage runs as a non-root user with an exec-form entry point, and it ships the
/// workspace's two binaries, which the build stage builds.
#[test]
fn the_dockerfile_is_well_formed() {
    const KNOWN: [&str; 18] = [
        "FROM",
        "RUN",
        "CMD",
        "LABEL",
        "EXPOSE",
        "ENV",
        "ADD",
        "COPY",
        "ENTRYPOINT",
        "VOLUME",
        "USER",
        "WORKDIR",
        "ARG",
        "ONBUILD",
        "STOPSIGNAL",
        "HEALTHCHECK",
        "SHELL",
        "MAINTAINER",
    ];
    let text = std::fs::read_to_string(repo().join("deploy/Dockerfile")).expect("deploy/Dockerfile");
    // Instructions, with continuation lines joined and comments dropped.
    let mut instructions: Vec<(String, String)> = Vec::new();
    let mut pending = String::new();
    for line in text.lines() {
        let t = line.trim();
        if pending.is_empty() && (t.is_empty() || t.starts_with('#')) {
            continue;
        }
        pending.push_str(t.strip_suffix('\\').unwrap_or(t));
        pending.push(' ');
        if !t.ends_with('\\') {
            let (word, rest) = pending.trim().split_once(' ').unwrap_or((pending.trim(), ""));
            instructions.push((word.to_owned(), rest.trim().to_owned()));
            pending.clear();
        }
    }
    assert!(pending.is_empty(), "a continuation line ends the file");
    assert_eq!(instructions.first().map(|(w, _)| w.as_str()), Some("FROM"), "the first instruction is FROM");
    let mut stages: Vec<String> = Vec::new();
    let mut last_user = None;
    for (word, rest) in &instructions {
        assert!(KNOWN.contains(&word.as_str()), "unknown instruction {word}");
        assert_eq!(word, &word.to_uppercase(), "instructions are upper case: {word}");
        match word.as_str() {
            "FROM" => {
                let parts: Vec<&str> = rest.split_whitespace().collect();
                let image = parts[0];
                let tag = image.rsplit_once(':').map(|(_, t)| t).unwrap_or("");
                assert!(!tag.is_empty() && tag != "latest", "base {image} is pinned to a version");
                assert!(
                    parts.len() == 3 && parts[1].eq_ignore_ascii_case("AS"),
                    "stage {image} is named: FROM … AS name"
                );
                stages.push(parts[2].to_owned());
                last_user = None;
            }
            "COPY" => {
                if let Some(from) = rest.split_whitespace().find_map(|p| p.strip_prefix("--from=")) {
                    assert!(
                        stages[..stages.len() - 1].iter().any(|s| s == from),
                        "COPY --from={from} names an earlier stage"
                    );
                }
            }
            "USER" => last_user = Some(rest.clone()),
            "ENTRYPOINT" | "CMD" => {
                let parsed: Result<Vec<String>, _> = serde_json::from_str(rest);
                assert!(parsed.is_ok(), "{word} is in exec form (a JSON array): {rest}");
            }
            _ => {}
        }
    }
    assert!(stages.len() >= 2, "a build stage and a runtime stage");
    let user = last_user.expect("the runtime stage sets USER");
    let uid = user.split(':').next().unwrap_or("");
    assert!(uid != "root" && uid != "0" && !uid.is_empty(), "the runtime stage runs as non-root, not {user}");
    let runtime: Vec<&(String, String)> = instructions
        .iter()
        .skip_while(|(w, r)| !(w == "FROM" && r.ends_with(stages.last().unwrap().as_str())))
        .collect();
    assert!(runtime.iter().any(|(w, _)| w == "ENTRYPOINT"), "the runtime stage has an entry point");
    for bin in ["dispatchd", "dispatchctl"] {
        assert!(
            runtime.iter().any(|(w, r)| w == "COPY" && r.contains(&format!("/usr/local/bin/{bin}"))),
            "the image ships {bin}"
        );
    }
    let build = instructions.iter().find(|(w, r)| w == "RUN" && r.contains("cargo build")).expect("a cargo build");
    assert!(build.1.contains("--locked") && build.1.contains("--release"), "a locked release build: {}", build.1);
    // The binaries it ships are the workspace's.
    let manifest = std::fs::read_to_string(repo().join("crates/dispatchd/Cargo.toml")).expect("manifest");
    assert!(manifest.contains("name = \"dispatchd\""), "dispatchd is a package of the workspace");
    assert!(repo().join("crates/dispatchd/src/bin/dispatchctl.rs").exists(), "dispatchctl is a binary of it");
    // The manifests run the image this file builds.
    let k8s = std::fs::read_to_string(repo().join("deploy/k8s/dispatchd.yaml")).expect("manifest");
    assert!(k8s.contains("image: dispatchd:0.1.0"), "deploy/k8s/dispatchd.yaml runs the image built here");
}
