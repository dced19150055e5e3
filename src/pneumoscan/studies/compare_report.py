"""The Markdown report of ``pneumoscan compare`` (``comparison.md``): one row per model, mean ± std over
seeds with seed 0's bootstrap interval, the paired tests and the pretraining ablation."""

from __future__ import annotations

BINARY_METRICS = ("auc", "accuracy", "sensitivity", "specificity", "f1", "average_precision")
HEADINGS = {"auc": "AUC", "f1": "F1", "average_precision": "AP", "balanced_accuracy": "balanced accuracy",
            "macro_f1": "macro-F1", "weighted_f1": "weighted F1", "macro_auc": "macro AUC"}


def _pair_table(pairs: dict, *, binary: bool) -> list[str]:
    seeds = {pair: len(t["mcnemar_p_per_seed"]) for pair, t in pairs.items()}  # the seeds both models have
    if binary:
        lines = ["| pair | DeLong p (AUC) | McNemar p (errors) |", "|---|---|---|"]
        return lines + [f"| {pair.replace('_vs_', ' vs ')} | {t['delong_p']:.3g} "
                        f"({t['significant_seeds_0.05']['delong']}/{seeds[pair]}) | {t['mcnemar_p']:.3g} "
                        f"({t['significant_seeds_0.05']['mcnemar']}/{seeds[pair]}) |" for pair, t in pairs.items()]
    lines = ["| pair | McNemar p (errors) | accuracy difference, seed 0 [paired bootstrap 95% CI] |", "|---|---|---|"]
    return lines + [f"| {pair.replace('_vs_', ' vs ')} | {t['mcnemar_p']:.3g} "
                    f"({t['significant_seeds_0.05']['mcnemar']}/{seeds[pair]}) | "
                    f"{t['accuracy_difference_per_seed'][0]:+.4f} "
                    f"[{t['accuracy_difference_ci95_per_seed'][0][0]:+.4f}, "
                    f"{t['accuracy_difference_ci95_per_seed'][0][1]:+.4f}] |" for pair, t in pairs.items()]


def _seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}"


def _seed_counts(result: dict, keys: tuple[str, ...]) -> dict[str, int]:
    """How many seeds each model's row summarises (a comparison spread over sessions may hold fewer seeds of
    one model than of another)."""
    return {name: len(m[keys[0]]["values"]) for name, m in result["models"].items()}


def comparison_markdown(result: dict, *, title: str = "Model comparison") -> str:
    keys = result.get("metrics", BINARY_METRICS)
    seeds = _seed_counts(result, keys)
    counts = set(seeds.values()) or {result["protocol"]["seeds"]}
    per_model = f"{counts.pop()} seed(s) per model" if len(counts) == 1 else "the seeds column says how many seeds"
    decision = "threshold chosen on validation" if "auc" in keys else "the most probable class"
    lines = [f"# {title}", "", f"{per_model}; mean ± std over seeds "
             f"(95% bootstrap CI of seed 0 in brackets). Test split, {decision}. Train s is the "
             "slowest seed: later seeds can reuse the first one's frozen-trunk activation cache; seeds whose time is "
             "not known are left out.", "",
             "| model | seeds | " + " | ".join(HEADINGS.get(k, k) for k in keys)
             + " | parameters | train s | ms/image |",
             "|---" * (len(keys) + 5) + "|"]
    for name, m in result["models"].items():
        cells = [f"{m[k]['mean']:.4f} ± {m[k]['std']:.4f} [{m['ci95_seed0'][k][0]:.3f}, {m['ci95_seed0'][k][1]:.3f}]"
                 for k in keys]
        lines.append(f"| {name} | {seeds[name]} | " + " | ".join(cells) + f" | {m['parameters']:,.0f} | "
                     f"{_seconds(m['train_seconds_max'])} | {m['inference_ms_per_image']:.1f} |")
    if result["pairs"]:  # one model alone has nothing to be paired with
        lines += ["", "## Paired tests (median p over seeds; seeds with p < 0.05)", ""]
        lines += _pair_table(result["pairs"], binary="auc" in keys)
    if "pretraining_ablation" in result:
        a = result["pretraining_ablation"]
        lines += ["", "## Pretraining ablation (DenseNet121)", "", a["budget"], "",
                  "| init | AUC | accuracy | sensitivity | specificity | train s |", "|---|---|---|---|---|---|"]
        lines += [f"| {k} | {v['auc']:.4f} | {v['accuracy']:.4f} | {v['sensitivity']:.4f} | {v['specificity']:.4f} "
                  f"| {v['train_seconds']:.0f} |" for k, v in a.items() if isinstance(v, dict)]
    return "\n".join(lines) + "\n"
