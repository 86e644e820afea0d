//! Replays the fuzz corpus and any saved crash inputs (`fuzz/corpus/decode_validate`,
//! `fuzz/artifacts/decode_validate`) through the fuzz entry point on the stable toolchain, then
//! runs a seeded mutation round over them, so that CI keeps every finding fixed.

use std::path::Path;

use dispatch_grpc::fuzzing::{decode_and_validate, seeds};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

fn files(dir: &Path) -> Vec<Vec<u8>> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut out: Vec<(std::path::PathBuf, Vec<u8>)> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .map(|p| (p.clone(), std::fs::read(p).unwrap()))
        .collect();
    out.sort();
    out.into_iter().map(|(_, d)| d).collect()
}

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz"))
}

#[test]
fn the_saved_corpus_and_crash_inputs_replay_without_panics() {
    let corpus = files(&root().join("corpus/decode_validate"));
    assert!(corpus.len() >= seeds().len(), "the seed corpus is committed ({} files)", corpus.len());
    let accepted = corpus.iter().filter(|d| decode_and_validate(d)).count();
    assert!(
        accepted > 0 && accepted < corpus.len(),
        "the corpus has valid and invalid inputs ({accepted}/{})",
        corpus.len()
    );
    for crash in files(&root().join("artifacts/decode_validate")) {
        decode_and_validate(&crash);
    }
}

#[test]
fn seeded_mutations_never_panic() {
    let mut rng = SmallRng::seed_from_u64(0x5eed);
    let base = files(&root().join("corpus/decode_validate"));
    for _ in 0..20_000 {
        let mut d = base[rng.random_range(0..base.len())].clone();
        for _ in 0..rng.random_range(1..8) {
            match rng.random_range(0..4) {
                0 if !d.is_empty() => {
                    let i = rng.random_range(0..d.len());
                    d[i] = rng.random();
                }
                1 => {
                    let i = rng.random_range(0..=d.len());
                    d.insert(i, rng.random());
                }
                2 if d.len() > 1 => {
                    let i = rng.random_range(1..d.len());
                    d.truncate(i);
                }
                _ => d.extend((0..rng.random_range(0..16)).map(|_| rng.random::<u8>())),
            }
        }
        decode_and_validate(&d);
    }
}

/// Writes the seeds into the corpus directory (run once with `DISPATCH_WRITE_SEEDS=1`).
#[test]
fn seeds_are_in_the_corpus() {
    let dir = root().join("corpus/decode_validate");
    if std::env::var_os("DISPATCH_WRITE_SEEDS").is_some() {
        std::fs::create_dir_all(&dir).unwrap();
        for (i, s) in seeds().iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i:02}")), s).unwrap();
        }
    }
    let corpus = files(&dir);
    for s in seeds() {
        assert!(corpus.contains(&s), "seed missing from the corpus; run with DISPATCH_WRITE_SEEDS=1");
    }
}
