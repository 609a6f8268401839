"""The one-process `reviews serve` alternative declares the deployments prefect.yaml declares."""

from flows.serve import deployments


def test_serve_declares_the_deployments_with_the_nightly_schedule():
    score, nightly, hourly, after = deployments(cron="15 2 * * *", timezone="Europe/Berlin")
    assert score.name == "score-reviews" and score.enforce_parameter_schema
    assert score.flow_name == "score-reviews" and not score.schedules
    assert nightly.name == "nightly" and nightly.flow_name == "retrain-sentiment"
    assert nightly.parameters == {"preset": "default", "labelled": [], "keep_versions": 14}
    assert nightly.concurrency_limit == 1
    (sched,) = nightly.schedules
    assert sched.schedule.cron == "15 2 * * *" and sched.schedule.timezone == "Europe/Berlin"
    assert (hourly.flow_name, after.flow_name) == ("score-new-dumps", "score-new-dumps")
    assert hourly.parameters["deployment"] == "score-reviews/score-reviews", "its runs go to the served deployment"
