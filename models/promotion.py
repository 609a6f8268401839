"""The promotion gate: does a freshly trained challenger replace the champion?"""

from __future__ import annotations

from typing import Any


# A p-value below this counts as a significant difference (McNemar, two-sided).
ALPHA = 0.05


def _pct(x: float) -> str:
    return f"{x * 100:+.2f} points"


def decide(challenger: str, champion: str | None, parity_ok: bool, parity_detail: str = "",
           comparison: dict[str, Any] | None = None, min_improvement: float = 0.0,
           champion_error: str | None = None, evaluation: dict[str, Any] | None = None) -> dict[str, Any]:
    """Does ``challenger`` replace ``champion``?  The decision, with its reason, for the audit log.

    ``comparison`` is :func:`models.comparison.compare` of the two versions' registered predictors
    on one evaluation set.  The challenger is promoted only when all of these hold:

    1. its inference export reproduces Keras (parity);
    2. it does not predict exactly as the champion does on every review (an identical retrain
       never churns the champion);
    3. it is not significantly less accurate (McNemar exact p < ``ALPHA`` against it);
    4. its AUC is not significantly lower (the paired-bootstrap 95% interval of the AUC
       difference lies wholly below 0);
    5. its accuracy exceeds the champion's by more than ``min_improvement`` (default 0: more
       accurate at all; ties keep the champion).  A negative value lets a slightly less accurate
       challenger through, as long as rule 3 holds.
    """
    decision: dict[str, Any] = {
        "challenger": challenger,
        "champion": champion,
        "min_improvement": min_improvement,
        "alpha": ALPHA,
        "parity_ok": parity_ok,
        "evaluation": evaluation,
        "comparison": comparison,
    }
    reasons: list[str] = []
    if not parity_ok:
        reasons.append(f"inference export parity check failed: {parity_detail}".rstrip(": "))
    if champion is None or champion == challenger:
        pass
    elif champion_error is not None:
        reasons.append(f"the champion {champion} could not be scored ({champion_error}); "
                       f"`reviews models promote` decides by hand")
    elif parity_ok and comparison is not None:
        c = comparison
        diff, ci, p = c["accuracy_difference"], c["accuracy_difference_ci95"], c["mcnemar_p_value"]
        stats = (f"accuracy {c['challenger_accuracy']:.4f} vs the champion's {c['champion_accuracy']:.4f} on the "
                 f"same {c['n']} reviews, difference {_pct(diff)} (95% CI {_pct(ci[0])} to {_pct(ci[1])}), "
                 f"McNemar exact p = {p:.3g}")
        auc_ci = c.get("auc_difference_ci95")
        if c["identical_predictions"]:
            reasons.append(f"identical predictions on all {c['n']} evaluation reviews (accuracy "
                           f"{c['challenger_accuracy']:.4f} for both): the champion is kept")
        elif diff < 0 and p < ALPHA:
            reasons.append(f"significantly less accurate: {stats}")
        elif auc_ci is not None and auc_ci[1] < 0:
            reasons.append(f"AUC significantly lower: {c['challenger_auc']:.4f} vs {c['champion_auc']:.4f}, "
                           f"95% CI of the difference {auc_ci[0]:+.4f} to {auc_ci[1]:+.4f}; {stats}")
        # In reviews, so float rounding of the accuracies cannot decide: +10 of 1,000 is not more than 0.01.
        elif not c["only_challenger_correct"] - c["only_champion_correct"] > min_improvement * c["n"]:
            reasons.append(f"not more accurate than the champion by more than min_improvement "
                           f"{min_improvement:g}: {stats}")
        else:
            decision["reason"] = f"more accurate than the champion: {stats}"
    decision["promote"] = not reasons
    if reasons:
        decision["reason"] = "; ".join(reasons)
    elif champion is None:
        decision["reason"] = "no champion yet"
    elif champion == challenger:
        decision["reason"] = "already champion (first registered version)"
    return decision


def decision_markdown(d: dict[str, Any]) -> str:
    verdict = "PROMOTED" if d["promote"] else "REJECTED"
    lines = [f"## Promotion gate: {verdict}", "", d["reason"], ""]
    c = d.get("comparison")
    if c:
        ev = d.get("evaluation") or {}
        parts = ", ".join(f"{k} {v}" for k, v in ev.get("parts", {}).items())
        ci, auc_ci = c["accuracy_difference_ci95"], c.get("auc_difference_ci95")
        lines += [
            f"Both versions scored by their registered predictors on the same {c['n']} reviews ({parts}).",
            "",
            "| | version | accuracy | AUC | input built with |",
            "|---|---|---:|---:|---|",
            f"| challenger | `{d['challenger']}` | {c['challenger_accuracy']:.4f} | {c['challenger_auc']:.4f} | "
            f"{ev.get('challenger_input', '-')} |",
            f"| champion | `{d['champion']}` | {c['champion_accuracy']:.4f} | {c['champion_auc']:.4f} | "
            f"{ev.get('champion_input', '-')} |",
            "",
            "| paired comparison (challenger - champion) | value |",
            "|---|---:|",
            f"| accuracy difference | {c['accuracy_difference']:+.4f} |",
            f"| 95% bootstrap CI ({c['bootstrap']['resamples']} resamples, seed {c['bootstrap']['seed']}) | "
            f"{ci[0]:+.4f} to {ci[1]:+.4f} |",
            f"| AUC difference (95% CI) | {c['auc_difference']:+.4f}"
            + (f" ({auc_ci[0]:+.4f} to {auc_ci[1]:+.4f})" if auc_ci else "") + " |",
            f"| reviews only the challenger / only the champion gets right | {c['only_challenger_correct']} / "
            f"{c['only_champion_correct']} |",
            f"| McNemar exact p (two-sided) | {c['mcnemar_p_value']:.4g} |",
            "",
        ]
    elif d["champion"] in (None, d["challenger"]):
        # The registry makes its first version champion on registration: a table of the version
        # against itself, with no metrics, would read like a failed comparison.
        verdict = "promoted" if d["promote"] else "rejected"
        lines += [f"First version `{d['challenger']}`: {verdict} without comparison (no earlier champion).", ""]
    else:
        lines += [f"Challenger `{d['challenger']}`, champion `{d['champion']}`: not compared.", ""]
    lines.append(f"min_improvement {d['min_improvement']:g}, significance level {d['alpha']}; "
                 f"export parity {'passed' if d['parity_ok'] else 'FAILED'}.")
    return "\n".join(lines)
