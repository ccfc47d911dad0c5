//! Best-model selection (docs/contract.md, "Best-model selection"): properties of the pure ranking
//! and of the cache key, and `trainctl select` end to end (cache reuse / force_new / corrupt
//! records, errors, and the hand-off to `train -o source.type=best_selected`).

use crate::support;

use proptest::prelude::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use trainctl::config::schema::Direction;
use trainctl::select::{cache_key, rank, Candidate, Settings};

fn settings(direction: Direction, wo: f64, wl: f64, threshold: Option<f64>) -> Settings {
    Settings {
        metric: "macro-f1".into(),
        direction,
        objective_weight: wo,
        latency_weight: wl,
        normalize_weights: true,
        min_objective: None,
        max_latency_ms: None,
        accuracy_threshold: threshold,
        relative_threshold: true,
        required_metrics: vec![],
        latency_metric: "latency_batch_1_ms".into(),
    }
}

/// An objective value: mostly ordinary, sometimes NaN, infinite or missing.
fn objective() -> impl Strategy<Value = Option<f64>> {
    prop_oneof![
        6 => (0u32..20).prop_map(|v| Some(f64::from(v) / 20.0)),
        1 => Just(Some(f64::NAN)),
        1 => Just(Some(f64::INFINITY)),
        1 => Just(None),
    ]
}

fn candidates(min: usize) -> impl Strategy<Value = Vec<Candidate>> {
    prop::collection::vec(
        (
            objective(),
            prop::option::weighted(0.9, 1u32..40),
            prop::option::of(0u64..5),
        ),
        min..9,
    )
    .prop_map(|rows| {
        rows.into_iter()
            .enumerate()
            .map(|(i, (obj, lat, start))| {
                let mut metrics = BTreeMap::new();
                if let Some(o) = obj {
                    metrics.insert("macro-f1".to_string(), Some(o));
                }
                if let Some(l) = lat {
                    metrics.insert("latency_batch_1_ms".to_string(), Some(f64::from(l)));
                }
                Candidate {
                    run_id: format!("run-{i:02}"),
                    metrics,
                    checkpoint: None,
                    start_time: start,
                    study_key_hash: None,
                    trial_key_hash: None,
                    trial_run_id: None,
                    backbone: None,
                    params: BTreeMap::new(),
                    trained_on_full_data: None,
                }
            })
            .collect()
    })
}

fn any_settings() -> impl Strategy<Value = Settings> {
    (
        prop_oneof![Just(Direction::Maximize), Just(Direction::Minimize)],
        0u32..4,
        0u32..4,
        prop::option::of(prop_oneof![Just(0.0), Just(0.015), Just(0.2)]),
    )
        .prop_map(|(d, wo, wl, t)| settings(d, f64::from(wo), f64::from(wl), t))
}

fn ids(r: &trainctl::select::Ranking) -> Vec<String> {
    r.ranked.iter().map(|s| s.run_id.clone()).collect()
}

proptest! {
    #![proptest_config(support::seeded_config(support::cases(256), module_path!(), "ranking"))]

    #[test]
    fn the_result_does_not_depend_on_input_order(
        s in any_settings(),
        (cands, shuffled) in candidates(1).prop_flat_map(|c| (Just(c.clone()), Just(c).prop_shuffle())),
    ) {
        let a = rank(&s, &cands).map(|r| ids(&r)).map_err(|e| e.kind);
        let b = rank(&s, &shuffled).map(|r| ids(&r)).map_err(|e| e.kind);
        prop_assert_eq!(a, b);
    }

    #[test]
    fn nan_never_wins(s in any_settings(), cands in candidates(0)) {
        let usable = |c: &Candidate| {
            c.metrics.get("macro-f1").copied().flatten().is_some_and(f64::is_finite)
                && (s.latency_weight == 0.0
                    || c.metrics.get("latency_batch_1_ms").copied().flatten().is_some())
        };
        match rank(&s, &cands) {
            Ok(r) => {
                for scored in &r.ranked {
                    let c = cands.iter().find(|c| c.run_id == scored.run_id).unwrap();
                    prop_assert!(usable(c), "{} ranked: {:?}", c.run_id, c.metrics);
                    prop_assert!(scored.composite.is_finite());
                }
                prop_assert_eq!(r.ranked.len() + r.excluded.len(), cands.len());
                prop_assert_eq!(r.warnings.len(), r.excluded.len(), "every exclusion is warned about");
            }
            Err(e) => {
                prop_assert_eq!(e.kind.as_str(), "no_eligible_candidates");
                prop_assert!(!cands.iter().any(usable), "an eligible candidate existed");
            }
        }
    }

    #[test]
    fn raising_the_winners_objective_keeps_it_the_winner(
        s in any_settings(),
        cands in candidates(1),
        raise in 1u32..10,
    ) {
        let Ok(before) = rank(&s, &cands) else { return Ok(()); };
        let winner = before.winner().run_id.clone();
        let mut better = cands.clone();
        let c = better.iter_mut().find(|c| c.run_id == winner).unwrap();
        let v = c.metrics["macro-f1"].unwrap();
        let delta = f64::from(raise) / 20.0;
        let raised = match s.direction { Direction::Maximize => v + delta, Direction::Minimize => v - delta };
        c.metrics.insert("macro-f1".into(), Some(raised));
        let after = rank(&s, &better).expect("still eligible");
        prop_assert_eq!(&after.winner().run_id, &winner);
    }

    #[test]
    fn with_all_weight_on_the_objective_the_winner_is_the_argmax(
        d in prop_oneof![Just(Direction::Maximize), Just(Direction::Minimize)],
        cands in candidates(1),
    ) {
        let s = settings(d, 1.0, 0.0, None);
        let Ok(r) = rank(&s, &cands) else { return Ok(()); };
        let best = r.ranked.iter().map(|x| match d {
            Direction::Maximize => x.objective,
            Direction::Minimize => -x.objective,
        }).fold(f64::NEG_INFINITY, f64::max);
        let w = r.winner();
        let got = match d { Direction::Maximize => w.objective, Direction::Minimize => -w.objective };
        prop_assert_eq!(got, best);
        prop_assert_eq!(r.rule, "composite");
    }

    #[test]
    fn the_cache_key_changes_when_and_only_when_an_input_changes(
        (cands, shuffled) in candidates(1).prop_flat_map(|c| (Just(c.clone()), Just(c).prop_shuffle())),
        which in 0usize..8,
        bump in 1u32..5,
    ) {
        let tree = json!({
            "run": {"mode": "reuse_if_exists"},
            "objective": {"metric": "macro-f1", "direction": "maximize"},
            "scoring": {"f1_weight": 0.7, "latency_weight": 0.3},
        });
        let key = cache_key(&tree, &cands);
        // Same inputs: input order and run.mode do not matter.
        prop_assert_eq!(&cache_key(&tree, &shuffled), &key);
        let mut force = tree.clone();
        force["run"]["mode"] = json!("force_new");
        prop_assert_eq!(&cache_key(&force, &cands), &key);
        // A changed metric value, a removed or added candidate, a changed setting: new key.
        let i = which % cands.len();
        let mut changed = cands.clone();
        let m = changed[i].metrics.entry("latency_batch_1_ms".into()).or_insert(Some(0.0));
        *m = Some(m.unwrap_or(0.0) + f64::from(bump));
        prop_assert_ne!(&cache_key(&tree, &changed), &key);
        let mut fewer = cands.clone();
        fewer.remove(i);
        prop_assert_ne!(&cache_key(&tree, &fewer), &key);
        let mut more = cands.clone();
        let mut extra = cands[i].clone();
        extra.run_id = "run-extra".into();
        more.push(extra);
        prop_assert_ne!(&cache_key(&tree, &more), &key);
        let mut weights = tree.clone();
        weights["scoring"]["f1_weight"] = json!(0.7 + f64::from(bump) / 10.0);
        prop_assert_ne!(&cache_key(&weights, &cands), &key);
    }
}

#[test]
fn composite_thresholds_and_the_accuracy_rule_on_a_worked_example() {
    let c = |id: &str, f1: f64, lat: f64| Candidate {
        run_id: id.into(),
        metrics: [
            ("macro-f1".to_string(), Some(f1)),
            ("latency_batch_1_ms".to_string(), Some(lat)),
        ]
        .into_iter()
        .collect(),
        checkpoint: None,
        start_time: None,
        study_key_hash: None,
        trial_key_hash: None,
        trial_run_id: None,
        backbone: None,
        params: BTreeMap::new(),
        trained_on_full_data: None,
    };
    let cands = vec![c("a", 0.90, 10.0), c("b", 0.80, 2.0), c("c", 0.895, 8.0)];
    // Composite (0.7/0.3): a = 0.7·1 + 0.3·0 = 0.7; b = 0 + 0.3·1 = 0.3;
    // c = 0.7·0.95 + 0.3·0.25 = 0.74.
    let r = rank(&settings(Direction::Maximize, 0.7, 0.3, None), &cands).unwrap();
    assert_eq!(ids(&r), ["c", "a", "b"]);
    assert!((r.ranked[0].composite - 0.74).abs() < 1e-12);
    assert!((r.ranked[1].composite - 0.7).abs() < 1e-12);
    assert!((r.ranked[2].composite - 0.3).abs() < 1e-12);
    // Weights are normalised: 9/1 is 0.9/0.1, and a (0.9) beats c (0.855 + 0.025).
    let r = rank(&settings(Direction::Maximize, 9.0, 1.0, None), &cands).unwrap();
    assert_eq!(
        (ids(&r), r.rule),
        (vec!["a".to_string(), "c".into(), "b".into()], "composite")
    );
    // Accuracy threshold 1.5% relative: c (0.895) is within 0.9·0.015 of a and faster.
    let r = rank(
        &settings(Direction::Maximize, 9.0, 1.0, Some(0.015)),
        &cands,
    )
    .unwrap();
    assert_eq!(
        (r.winner().run_id.as_str(), r.rule),
        ("c", "accuracy_threshold")
    );
    // Absolute 0.2: b is within too, and fastest.
    let mut s = settings(Direction::Maximize, 9.0, 1.0, Some(0.2));
    s.relative_threshold = false;
    assert_eq!(rank(&s, &cands).unwrap().winner().run_id, "b");
    // Thresholds exclude with a reason.
    let mut s = settings(Direction::Maximize, 0.7, 0.3, None);
    s.min_objective = Some(0.85);
    s.max_latency_ms = Some(9.0);
    let r = rank(&s, &cands).unwrap();
    assert_eq!(ids(&r), ["c"]);
    assert_eq!(r.excluded.len(), 2, "{:?}", r.excluded);
    // Minimize: the lowest objective is best.
    let r = rank(&settings(Direction::Minimize, 1.0, 0.0, None), &cands).unwrap();
    assert_eq!(r.winner().run_id, "b");
}

// ---- through the binary ----

fn trials_file(project: &support::Project, name: &str, doc: &Value) -> std::path::PathBuf {
    let path = project.root().join(name);
    std::fs::write(&path, serde_json::to_vec_pretty(doc).unwrap()).unwrap();
    path
}

fn select(project: &support::Project, args: &[&str]) -> (i32, Value) {
    let mut all = vec!["--json", "select"];
    all.extend_from_slice(args);
    let (code, stdout, stderr) = project.run(&all);
    let doc = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}\nstderr: {stderr}"));
    (code, doc)
}

#[test]
fn select_records_reuses_recomputes_and_hands_the_winner_to_train() {
    let project = support::Project::new();
    // Two real "HPO" checkpoints: the shipped config at two learning rates.
    let mut dirs = Vec::new();
    for lr in ["0.05", "0.01"] {
        let o = format!("training.learning_rate={lr}");
        let (code, doc) = project.run_json(&["-o", &o, "-o", "training.epochs=1", "train"]);
        assert_eq!(code, 0, "{doc}");
        dirs.push(std::path::PathBuf::from(
            doc["output_dir"].as_str().unwrap(),
        ));
    }
    let trials = json!({"schema_version": 1, "candidates": [
        {"run_id": "hpo-fast", "metrics": {"macro-f1": 0.91, "latency_batch_1_ms": 3.0},
         "checkpoint": dirs[1].join("checkpoint"), "study_key_hash": "s1", "trial_key_hash": "t1"},
        {"run_id": "hpo-best", "metrics": {"macro-f1": 0.95, "latency_batch_1_ms": 5.0},
         "checkpoint": dirs[0].join("checkpoint"), "study_key_hash": "s1", "trial_key_hash": "t2"},
        {"run_id": "hpo-nan", "metrics": {"macro-f1": null, "latency_batch_1_ms": 1.0}},
    ]});
    let path = trials_file(&project, "trials.json", &trials);
    let p = path.to_str().unwrap();
    let (code, first) = select(&project, &["--trials", p]);
    assert_eq!(
        (code, first["decision"].as_str()),
        (0, Some("new")),
        "{first}"
    );
    assert_eq!(first["selected"]["run_id"], "hpo-best");
    assert!(first["warnings"].to_string().contains("hpo-nan"), "{first}");
    // Same config and candidates: the cached result, nothing written.
    let before = support::snapshot(project.root());
    let (code, again) = select(&project, &["--trials", p]);
    assert_eq!(
        (code, again["decision"].as_str()),
        (0, Some("reuse")),
        "{again}"
    );
    assert_eq!(again["record"], first["record"]);
    assert!(support::changed(&before, &support::snapshot(project.root())).is_empty());
    // force_new recomputes and writes a new record with the same key.
    let (code, forced) = select(
        &project,
        &[
            "-o",
            "best_model_selection:run.mode=force_new",
            "--trials",
            p,
        ],
    );
    assert_eq!(
        (code, forced["decision"].as_str()),
        (0, Some("new")),
        "{forced}"
    );
    assert_eq!(
        forced["key"], first["key"],
        "run.mode is not part of the key"
    );
    assert_ne!(forced["record"], first["record"]);
    // A corrupt record is not trusted: truncate both records, reuse_if_exists recomputes.
    let cache = project.root().join("outputs/cache/best_model_selection");
    for r in [&first["record"], &forced["record"]] {
        std::fs::write(cache.join(r.as_str().unwrap()), b"{\"schema_ver").unwrap();
    }
    let (code, recomputed) = select(&project, &["--trials", p]);
    assert_eq!(
        (code, recomputed["decision"].as_str()),
        (0, Some("new")),
        "{recomputed}"
    );
    assert!(
        recomputed["warnings"].to_string().contains("unreadable"),
        "{recomputed}"
    );
    // The winner's checkpoint is what best_selected trains from.
    let (code, trained) = project.run_json(&[
        "-o",
        "source.type=best_selected",
        "-o",
        "training.epochs=1",
        "train",
    ]);
    assert_eq!(code, 0, "{trained}");
    let meta: Value = serde_json::from_slice(
        &std::fs::read(
            std::path::Path::new(trained["output_dir"].as_str().unwrap()).join("metadata.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        meta["source"]["init_checkpoint"],
        dirs[0].join("checkpoint").display().to_string()
    );
    assert_eq!(meta["source"]["selection"]["trial_key_hash"], "t2");
    assert_eq!(meta["source"]["selection"]["run_id"], "hpo-best");
}

#[test]
fn select_errors_name_the_file_and_candidate_and_change_nothing() {
    let project = support::Project::new();
    let none = trials_file(
        &project,
        "none.json",
        &json!([
            {"run_id": "a", "metrics": {"macro-f1": null}},
            {"run_id": "b", "metrics": {"accuracy": 0.9}},
        ]),
    );
    let before_files = support::snapshot(project.root());
    let (code, doc) = select(&project, &["--trials", none.to_str().unwrap()]);
    assert_eq!(
        (code, doc["error"]["kind"].as_str()),
        (3, Some("no_eligible_candidates")),
        "{doc}"
    );
    let message = doc["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("a: objective macro-f1 missing") && message.contains("b:"),
        "{message}"
    );
    assert!(support::changed(&before_files, &support::snapshot(project.root())).is_empty());
    let bad = trials_file(
        &project,
        "bad.json",
        &json!({"candidates": [
            {"run_id": "a", "metrics": {"macro-f1": 0.5}},
            {"run_id": "b", "metrics": {"macro-f1": "high"}},
        ]}),
    );
    let before_files = support::snapshot(project.root());
    let (code, doc) = select(&project, &["--trials", bad.to_str().unwrap()]);
    assert_eq!(
        (code, doc["error"]["kind"].as_str()),
        (2, Some("config_invalid")),
        "{doc}"
    );
    assert_eq!(
        doc["error"]["key"], "candidates[1].metrics.macro-f1",
        "{doc}"
    );
    assert!(doc["error"]["file"].as_str().unwrap().ends_with("bad.json"));
    assert!(support::changed(&before_files, &support::snapshot(project.root())).is_empty());
    let dup = trials_file(
        &project,
        "dup.json",
        &json!([{"run_id": "a"}, {"run_id": "a"}]),
    );
    let before_files = support::snapshot(project.root());
    let (code, doc) = select(&project, &["--trials", dup.to_str().unwrap()]);
    assert_eq!(
        (code, doc["error"]["key"].as_str()),
        (2, Some("candidates[1].run_id")),
        "{doc}"
    );
    let (code, doc) = select(&project, &["--trials", "missing.json"]);
    assert_eq!(
        (code, doc["error"]["kind"].as_str()),
        (2, Some("config_missing")),
        "{doc}"
    );
    assert!(support::changed(&before_files, &support::snapshot(project.root())).is_empty());
}
