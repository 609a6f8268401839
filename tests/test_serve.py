"""The one-process `reviews serve` alternative declares the same two deployments."""

from flows.serve import deployments


def test_serve_declares_both_deployments_with_the_nightly_schedule():
    score, nightly = deployments(cron="15 2 * * *", timezone="Europe/Berlin")
    assert score.name == "score-reviews" and score.enforce_parameter_schema
    assert score.flow_name == "score-reviews" and not score.schedules
    assert nightly.name == "nightly" and nightly.flow_name == "retrain-sentiment"
    assert nightly.parameters == {"preset": "default"}
    assert nightly.concurrency_limit == 1
    (sched,) = nightly.schedules
    assert sched.schedule.cron == "15 2 * * *" and sched.schedule.timezone == "Europe/Berlin"
