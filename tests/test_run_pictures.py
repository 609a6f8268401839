"""What a person sees on a run's page: pictures inline in the artifacts, learning curves with
more than one point for a one-epoch run, the first version's gate text.  Whether Prefect's UI renders a data-URI
image was checked by hand in chromium (it does); these tests hold what that rendering needs."""

from __future__ import annotations

import numpy as np

from models import evaluation
from models.presets import get_preset
from models.promotion import decide, decision_markdown
from models.training import fit
from tasks.reporting import inline_png
from tests.pictures import PNG_MAGIC, inline_pngs


def one_epoch_fit():
    config = get_preset("seed", maxlen=10, embedding_dim=4, lstm_units=4, batch_size=8, epochs=1,
                        early_stopping_patience=None)
    rng = np.random.default_rng(0)
    x = rng.integers(1, 40, size=(96, 10)).astype(np.int32)
    y = (x[:, 0] > 20).astype(np.int8)
    return fit(config, 40, x[:80], y[:80], x[80:], y[80:], verbose=0)


def test_one_epoch_run_records_training_metrics_per_step_and_plots_them(tmp_path):
    result = one_epoch_fit()
    steps = result.step_history
    assert result.steps_per_epoch == 10 and len(result.history["loss"]) == 1
    assert len(steps["step"]) > 1 and steps["step"][-1] == 10, "one point per batch here (10 batches)"
    assert len(steps["loss"]) == len(steps["accuracy"]) == len(steps["step"])

    path = tmp_path / "report.png"
    scores = np.random.default_rng(1).random(40)
    evaluation.plot_report(result.history, (scores > 0.5).astype(int), scores, str(path), steps=steps,
                           steps_per_epoch=result.steps_per_epoch)
    png = path.read_bytes()
    assert png.startswith(PNG_MAGIC) and len(png) < 150_000, "small enough to inline into an artifact"
    shown = inline_pngs("text\n\n" + inline_png("curves", png) + "\n\nmore text")
    assert shown == [png]


def test_first_version_gate_text_says_promoted_without_comparison():
    first = decision_markdown(decide("v1", "v1", True))
    assert "First version `v1`: promoted without comparison" in first
    assert "| champion |" not in first and "`-`" not in first
    assert "promoted without comparison" in decision_markdown(decide("v1", None, True))
    broken = decision_markdown(decide("v1", "v1", False, "max |delta| = 0.1"))
    assert "rejected without comparison" in broken


def assert_run_shows_pictures_tags_and_first_version(version: str) -> None:
    """For a first version trained by ``reviews train`` under the harness' API: its run carries
    the README's tags, its training report shows the picture, its gate says "first version"."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        reports = [a for a in client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["training-report"])))
            if version in str(a.data)]
        assert len(reports) == 1, "one training report names the version"
        run = client.read_flow_run(reports[0].flow_run_id)
        gates = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["promotion-decision"])))
    assert {"reviews", "retrain"} <= set(run.tags), run.tags
    pictures = inline_pngs(reports[0].data)
    assert len(pictures) == 1 and pictures[0].startswith(PNG_MAGIC) and len(pictures[0]) < 150_000
    gate_text = [str(a.data) for a in gates if a.flow_run_id == run.id]
    assert len(gate_text) == 1 and "promoted without comparison" in gate_text[0]


def test_dump_profile_picture_shows_this_dump_beside_the_reference():
    from models.dump_profile import DumpProfile
    from models.profile_chart import profile_png

    rng = np.random.default_rng(3)
    def profile(n: int, maxlen: int) -> DumpProfile:
        import pyarrow as pa

        tokens = pa.array([list(rng.integers(3, 500, size=rng.integers(1, maxlen))) for _ in range(n)])
        return DumpProfile.from_batch(tokens, rng.random(n).astype(np.float32), num_words=400)

    for reference in (profile(300, 200), None):  # a version registered before profiles has none
        png = profile_png(profile(200, 20), reference)
        assert png.startswith(PNG_MAGIC) and len(png) < 150_000, "small enough to inline into an artifact"
        assert inline_pngs(inline_png("profile", png)) == [png]
