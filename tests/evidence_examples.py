"""Evidence of each built-in finding kind as the auditor writes it, for tests that build
findings by hand (store, alerts, gallery, dashboard)."""

from __future__ import annotations

from typing import Any

from auditor.evidence import FINDING_KINDS, FindingEvidence

EXAMPLES: dict[str, dict[str, Any]] = {
    "probe_sensitivity": {
        "flip_rate": 0.4,
        "neutral_flip_rate": 0.03,
        "excess_flip_rate": 0.37,
        "margin_drop": 1.2,
        "neutral_margin_drop": 0.05,
        "accuracy": 0.6,
        "baseline_accuracy": None,
        "perturbation_norm": 12.5,
        "threshold": 0.15,
    },
    "spurious_channels": {
        "layer": "layer4",
        "class_index": 1,
        "class_name": "fake",
        "n_samples": 120,
        "channels": [15, 11, 3],
        "dropout": {
            "statistics": {
                "effect": 0.39,
                "ci_low": 0.3,
                "ci_high": 0.47,
                "p_value": 0.0099,
                "effect_size": 8.1,
            },
            "top_k_margin_drop": 0.52,
            "random_k_margin_drop_mean": 0.13,
            "random_k_margin_drop_max": 0.2,
            "bottom_k_margin_drop": 0.01,
            "top_k_flip_rate": 0.3,
            "random_k_flip_rate_mean": 0.02,
            "effect": 0.39,
            "effect_size": 8.1,
        },
        "top_k_activation_drop": 0.93,
        "random_k_activation_drop_mean": 0.21,
        "random_k_activation_drops": [0.2, 0.25, 0.18],
        "activation_collapse": 0.72,
        "thresholds": {"dropout_effect": 0.1, "activation_collapse": 0.3},
    },
    "explanation_drift": {
        "statistic": "js_distance",
        "value": 0.44,
        "no_drift_interval": [0.0, 0.03],
        "confidence": 0.99,
        "threshold": 0.1,
        "bound": "max",
        "layer": "layer4",
        "baseline_audit_id": 1,
        "baseline_model_version": "1",
        "model_version": "2",
        "n_samples": {"audit": 300, "baseline": 300},
        "n_replicates": 200,
    },
    "unlabeled_subclass": {
        "cluster": 2,
        "size": 40,
        "n_reference": 0,
        "n_production": 40,
        "reference_share": 0.0,
        "predictions": {"real": 40},
        "class_index": 0,
        "class_name": "real",
        "prediction_share": 1.0,
        "confidence": 0.97,
        "n_labelled": 0,
        "label_purity": None,
        "error_rate": None,
        "member_distance": 0.8,
        "reference_distance": 3.1,
        "reference_members_distance": 1.2,
        "distance_ratio": 2.6,
        "profile_distance": 0.05,
        "layer": "layer4",
        "metric": "cosine",
        "overall_reference_share": 0.5,
        "signals": ["distance"],
        "members": ["new-0", "new-1"],
        "nearest_reference": ["vali-0-3", None],
        "member_distances": [3.0, 3.2],
        "thresholds": {"min_cluster_size": 10, "max_reference_share": 0.25},
    },
}


def example_evidence(kind: str, **changes: Any) -> FindingEvidence:
    """The example evidence of `kind` with `changes` to its top-level fields."""
    return FINDING_KINDS.get(kind).read({**EXAMPLES[kind], **changes})
