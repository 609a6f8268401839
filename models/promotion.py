"""The promotion gate: does a freshly trained challenger replace the champion?"""

from __future__ import annotations

from typing import Any


def decide(challenger: dict[str, Any], champion: dict[str, Any] | None, parity_ok: bool, parity_detail: str = "",
           accuracy_tolerance: float = 0.0, auc_tolerance: float = 0.0) -> dict[str, Any]:
    """Compare registry metadata of two versions; returns the decision with its reasons.

    The challenger must (1) pass the inference-export parity check, (2) reach test
    accuracy >= champion's - ``accuracy_tolerance`` and (3) not lose more than
    ``auc_tolerance`` of ROC AUC.
    """
    cm = challenger.get("metrics", {})
    decision: dict[str, Any] = {
        "challenger": challenger["version"],
        "champion": champion["version"] if champion else None,
        "challenger_metrics": {"test_accuracy": cm.get("test_accuracy"), "test_auc": cm.get("test_auc")},
        "champion_metrics": None,
        "accuracy_tolerance": accuracy_tolerance,
        "auc_tolerance": auc_tolerance,
        "parity_ok": parity_ok,
    }
    reasons: list[str] = []
    if not parity_ok:
        reasons.append(f"inference export parity check failed: {parity_detail}".rstrip(": "))
    if champion is not None and champion["version"] != challenger["version"]:
        pm = champion.get("metrics", {})
        decision["champion_metrics"] = {"test_accuracy": pm.get("test_accuracy"), "test_auc": pm.get("test_auc")}
        acc_c, acc_p = cm.get("test_accuracy"), pm.get("test_accuracy")
        if acc_c is None or (acc_p is not None and acc_c < acc_p - accuracy_tolerance):
            reasons.append(f"test accuracy {acc_c} < champion's {acc_p} - {accuracy_tolerance}")
        auc_c, auc_p = cm.get("test_auc"), pm.get("test_auc")
        if auc_c is None or (auc_p is not None and auc_c < auc_p - auc_tolerance):
            reasons.append(f"test AUC {auc_c} < champion's {auc_p} - {auc_tolerance}")
    decision["promote"] = not reasons
    if reasons:
        decision["reason"] = "; ".join(reasons)
    elif champion is None:
        decision["reason"] = "no champion yet"
    elif champion["version"] == challenger["version"]:
        decision["reason"] = "already champion (first registered version)"
    else:
        decision["reason"] = "challenger passed the gate"
    return decision


def decision_markdown(d: dict[str, Any]) -> str:
    def fmt(m: dict | None, key: str) -> str:
        v = (m or {}).get(key)
        return f"{v:.4f}" if isinstance(v, (int, float)) else "-"

    verdict = "PROMOTED" if d["promote"] else "REJECTED"
    return (f"## Promotion gate: {verdict}\n\n{d['reason']}\n\n"
            f"| | version | test accuracy | test AUC |\n|---|---|---|---|\n"
            f"| challenger | `{d['challenger']}` | {fmt(d['challenger_metrics'], 'test_accuracy')} | "
            f"{fmt(d['challenger_metrics'], 'test_auc')} |\n"
            f"| champion | `{d['champion'] or '-'}` | {fmt(d['champion_metrics'], 'test_accuracy')} | "
            f"{fmt(d['champion_metrics'], 'test_auc')} |\n\n"
            f"Tolerances: accuracy {d['accuracy_tolerance']}, AUC {d['auc_tolerance']}; "
            f"export parity {'passed' if d['parity_ok'] else 'FAILED'}.")
