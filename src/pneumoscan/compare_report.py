"""The Markdown report of ``pneumoscan compare`` (``comparison.md``): one row per model, mean ± std over
seeds with seed 0's bootstrap interval, the paired tests and the pretraining ablation."""

from __future__ import annotations

BINARY_METRICS = ("auc", "accuracy", "sensitivity", "specificity", "f1", "average_precision")
HEADINGS = {"auc": "AUC", "f1": "F1", "average_precision": "AP", "balanced_accuracy": "balanced accuracy",
            "macro_f1": "macro-F1", "weighted_f1": "weighted F1", "macro_auc": "macro AUC"}


def _pair_table(pairs: dict, seeds: int, *, binary: bool) -> list[str]:
    if binary:
        lines = ["| pair | DeLong p (AUC) | McNemar p (errors) |", "|---|---|---|"]
        return lines + [f"| {pair.replace('_vs_', ' vs ')} | {t['delong_p']:.3g} "
                        f"({t['significant_seeds_0.05']['delong']}/{seeds}) | {t['mcnemar_p']:.3g} "
                        f"({t['significant_seeds_0.05']['mcnemar']}/{seeds}) |" for pair, t in pairs.items()]
    lines = ["| pair | McNemar p (errors) | accuracy difference, seed 0 [paired bootstrap 95% CI] |", "|---|---|---|"]
    return lines + [f"| {pair.replace('_vs_', ' vs ')} | {t['mcnemar_p']:.3g} "
                    f"({t['significant_seeds_0.05']['mcnemar']}/{seeds}) | {t['accuracy_difference_per_seed'][0]:+.4f} "
                    f"[{t['accuracy_difference_ci95_per_seed'][0][0]:+.4f}, "
                    f"{t['accuracy_difference_ci95_per_seed'][0][1]:+.4f}] |" for pair, t in pairs.items()]


def _seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}"


def comparison_markdown(result: dict, *, title: str = "Model comparison") -> str:
    seeds = result["protocol"]["seeds"]
    keys = result.get("metrics", BINARY_METRICS)
    decision = "threshold chosen on validation" if "auc" in keys else "the most probable class"
    lines = [f"# {title}", "", f"{seeds} seed(s) per model; mean ± std over seeds "
             f"(95% bootstrap CI of seed 0 in brackets). Test split, {decision}. Train s is the "
             "slowest seed: later seeds can reuse the first one's frozen-trunk activation cache; seeds whose time is "
             "not known are left out.", "",
             "| model | " + " | ".join(HEADINGS.get(k, k) for k in keys) + " | parameters | train s | ms/image |",
             "|---" * (len(keys) + 4) + "|"]
    for name, m in result["models"].items():
        cells = [f"{m[k]['mean']:.4f} ± {m[k]['std']:.4f} [{m['ci95_seed0'][k][0]:.3f}, {m['ci95_seed0'][k][1]:.3f}]"
                 for k in keys]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {m['parameters']:,.0f} | "
                     f"{_seconds(m['train_seconds_max'])} | {m['inference_ms_per_image']:.1f} |")
    lines += ["", "## Paired tests (median p over seeds; seeds with p < 0.05)", ""]
    lines += _pair_table(result["pairs"], seeds, binary="auc" in keys)
    if "pretraining_ablation" in result:
        a = result["pretraining_ablation"]
        lines += ["", "## Pretraining ablation (DenseNet121)", "", a["budget"], "",
                  "| init | AUC | accuracy | sensitivity | specificity | train s |", "|---|---|---|---|---|---|"]
        lines += [f"| {k} | {v['auc']:.4f} | {v['accuracy']:.4f} | {v['sensitivity']:.4f} | {v['specificity']:.4f} "
                  f"| {v['train_seconds']:.0f} |" for k, v in a.items() if isinstance(v, dict)]
    return "\n".join(lines) + "\n"
