"""One-process alternative to a work pool: serve the project's deployments from this process.

The same four as prefect.yaml: score-reviews, the nightly retrain, the hourly new-dump discovery
and the rescoring after a promotion (triggered by ``reviews.model.promoted``).  Settings come from
the same environment variables with the same defaults, read when the process starts.

Stopping the process pauses the served schedules (Prefect's behaviour for ``serve``);
they resume when it is started again.
"""

from __future__ import annotations

import os

from prefect import serve

from flows.discover import DEFAULT_DEPLOYMENT, score_new_dumps
from flows.retrain import retrain_sentiment
from flows.score import score_reviews


def deployments(cron: str | None = None, timezone: str | None = None):
    cron = cron or os.environ.get("REVIEWS_NIGHTLY_CRON", "0 3 * * *")
    timezone = timezone or os.environ.get("REVIEWS_NIGHTLY_TIMEZONE", "UTC")
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
    from prefect.client.schemas.schedules import CronSchedule
    from prefect.events import DeploymentEventTrigger

    roots = {"input_root": os.environ.get("REVIEWS_DUMPS_ROOT", "s3://reviews/dumps"),
             "output_root": os.environ.get("REVIEWS_SCORES_ROOT", "s3://reviews/scores"),
             "deployment": DEFAULT_DEPLOYMENT, "max_concurrent": 2, "score_parameters": {}}
    return [
        score_reviews.to_deployment(name="score-reviews", tags=["reviews", "scoring", "score-reviews"],
                                    enforce_parameter_schema=True),
        retrain_sentiment.to_deployment(name="nightly", tags=["reviews", "retrain", "nightly"],
                                        # prefect.yaml's nightly: keep 14 versions (pruning), no labelled data yet.
                                        parameters={"preset": "default", "labelled": [], "keep_versions": 14},
                                        schedule=CronSchedule(cron=cron, timezone=timezone),
                                        concurrency_limit=ConcurrencyLimitConfig(
                                            limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE)),
        # As in prefect.yaml: an hour with a backlog drops the next discovery, a second promotion waits.
        score_new_dumps.to_deployment(
            name="hourly", tags=["reviews", "scoring", "score-new-dumps"],
            parameters={**roots, "rescore_on_promotion": False},
            schedule=CronSchedule(cron=os.environ.get("REVIEWS_DISCOVERY_CRON", "0 * * * *"), timezone="UTC"),
            concurrency_limit=ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW)),
        score_new_dumps.to_deployment(
            name="after-promotion", tags=["reviews", "scoring", "score-new-dumps", "after-promotion"],
            parameters={**roots, "rescore_on_promotion": True},
            concurrency_limit=ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE),
            triggers=[DeploymentEventTrigger(enabled=True, match={"prefect.resource.id": "reviews.model.*"},
                                             expect={"reviews.model.promoted"},
                                             parameters={"rescore_on_promotion": True})]),
    ]


def main(cron: str | None = None, timezone: str | None = None) -> None:
    serve(*deployments(cron, timezone))
