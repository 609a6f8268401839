"""One-process alternative to a work pool: serve both deployments from this process.

Stopping the process pauses the served schedules (Prefect's behaviour for ``serve``);
they resume when it is started again.
"""

from __future__ import annotations

import os

from prefect import serve

from flows.retrain import retrain_sentiment
from flows.score import score_reviews


def deployments(cron: str | None = None, timezone: str | None = None):
    cron = cron or os.environ.get("REVIEWS_NIGHTLY_CRON", "0 3 * * *")
    timezone = timezone or os.environ.get("REVIEWS_NIGHTLY_TIMEZONE", "UTC")
    from prefect.client.schemas.schedules import CronSchedule

    return [
        score_reviews.to_deployment(name="score-reviews", tags=["reviews", "scoring"],
                                    enforce_parameter_schema=True),
        retrain_sentiment.to_deployment(name="nightly", tags=["reviews", "retrain", "nightly"],
                                        parameters={"preset": "default"},
                                        schedule=CronSchedule(cron=cron, timezone=timezone),
                                        concurrency_limit=1),
    ]


def main(cron: str | None = None, timezone: str | None = None) -> None:
    serve(*deployments(cron, timezone))
