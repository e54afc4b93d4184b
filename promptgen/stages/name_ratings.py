"""Name ratings: how common an LLM finds each candidate name of a class (rename --scorer llm).

One question per class (template `name-commonness`) lists the class's candidate names, each
quoted as a class name is in a prompt; the answer is read as `name: rating` pairs (1-10). An
answer with no rating in it is asked again while `answer_retries` allows, then counts as no
ratings. The stage runs on the stage runner without a set: the ratings feed `choose_names`.
"""

from __future__ import annotations

from dataclasses import dataclass

from promptgen.classes import ClassList
from promptgen.llm.client import LLMClient, LLMRequest, LLMRequestFailed, LLMResponse
from promptgen.parsing import parse_ratings
from promptgen.stages.runner import LLMStage, StageOutput, StageRun, Verdict, run_stage
from promptgen.names import Candidate
from promptgen.templates import QueryTemplate, name_for_prompt

__all__ = ["NameRatingJob", "NameRatings", "rate_names"]

STAGE = "name-ratings"


@dataclass
class NameRatings:
    """Each class's ratings by name (case-folded), and the classes whose request failed."""

    ratings: dict[int, dict[str, float]]
    failed: dict[int, str]


@dataclass
class NameRatingJob(LLMStage):
    classes: ClassList
    candidates: list[list[Candidate]]
    template: QueryTemplate
    draw: int = 0
    answer_retries: int = 2
    set_name: str = STAGE
    stage: str = STAGE

    def fingerprint(self, client: LLMClient) -> dict:
        return {"classes_hash": self.classes.hash, "template": self.template.ref,
                "template_sha256": self.template.sha256, "model": client.model, "draw": self.draw}

    def header(self, client: LLMClient) -> dict:
        return {"template": self.template.manifest_entry(), "sampling": self.template.sampling,
                "text_kind": "rating", "answer_retries": self.answer_retries}

    def plan_requests(self, client: LLMClient) -> list[LLMRequest]:
        question = self.template.questions[0]
        requests = []
        for c, per_class in enumerate(self.candidates):
            names = "\n".join(f"- {name_for_prompt(cand.name)}" for cand in per_class)
            messages = self.template.render(question, self.classes.names[c], extra={"names": names})
            requests += client.plan(messages, self.template.sampling, draw=self.draw, tag=(c,))
        return requests

    def journal_fields(self, request: LLMRequest) -> dict:
        return {"class_index": request.tag[0]}

    def new_state(self) -> NameRatings:
        return NameRatings({}, {})

    def on_answer(self, run: StageRun, request: LLMRequest, response: LLMResponse) -> Verdict:
        parsed = parse_ratings(response.choices[0].get("text") if response.choices else "")
        again = [] if parsed else run.reask(request)
        if not again:
            run.state.ratings[request.tag[0]] = parsed
        return Verdict(bool(parsed), None if parsed else "no rating in the answer", again)

    def on_failure(self, run: StageRun, request: LLMRequest, failure: LLMRequestFailed) -> list[LLMRequest]:
        run.state.failed[request.tag[0]] = failure.error
        return []

    def finish(self, run: StageRun) -> StageOutput:
        failures = [{"class_name": self.classes.names[c], "error": e} for c, e in sorted(run.state.failed.items())]
        return StageOutput([], "partial" if failures else "complete", {}, failures=failures)


def rate_names(job: NameRatingJob, client: LLMClient) -> tuple[NameRatings, dict]:
    """The ratings, and the report `rename` keeps of how they were got."""
    result = run_stage(job, client, None, description="rating names")
    stats = result.stats
    unrated = [job.classes.names[c] for c in range(len(job.candidates)) if not result.run.state.ratings.get(c)]
    return result.run.state, {"model": client.model, "requests_sent": stats.sent, "cache_hits": stats.cache_hits,
                              "cost_usd_this_run": stats.cost_usd if stats.sent else 0.0,
                              "classes_unrated": unrated, "failed": result.failures}
