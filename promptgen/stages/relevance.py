"""Caption relevance: is a caption that mentions a name about the class? (REAL's LLM check)

REAL (`analysis/laion/llama/llama_miner.py`) asks LLaMA-2 one yes/no question per mined caption and
scales the class's count by the share of yes answers. Here each counted name of each class has up
to N sampled captions (count-names draws them, the same on every engine); each is one question of
template `caption-relevance`, and the name's relevance is yes / (yes + no). An answer that is
neither is asked again while `answer_retries` allows, then left out. The stage runs into the counts
version count-names holds open, so its answers are journalled there and a resumed count reuses them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from promptgen.classes import ClassList
from promptgen.llm.client import LLMClient, LLMRequest, LLMRequestFailed, LLMResponse
from promptgen.stages.runner import LLMStage, StageOutput, StageRun, Verdict
from promptgen.templates import QueryTemplate

__all__ = ["RelevanceJob", "Judgements", "read_yes_no", "TOO_LONG"]

STAGE = "caption-relevance"
TOO_LONG = "Too long a caption."  # REAL's stand-in for a caption over 100 words
_MAX_WORDS = 100


def read_yes_no(text: str | None) -> bool | None:
    """REAL reads `answer.strip().strip('.').lower()` == "yes"; a leading yes or no is read as such,
    anything else is no answer."""
    words = (text or "").strip().strip(".").lower().split()
    first = words[0].strip(".,!:;\"'") if words else ""
    return True if first == "yes" else False if first == "no" else None


@dataclass
class Judgements:
    """Per (class index, name): how many sampled captions were judged, and how many were about the class."""

    judged: dict[tuple[int, str], int] = field(default_factory=dict)
    relevant: dict[tuple[int, str], int] = field(default_factory=dict)
    unusable: int = 0
    failed: list[dict] = field(default_factory=list)


@dataclass
class RelevanceJob(LLMStage):
    classes: ClassList
    template: QueryTemplate
    samples: dict[tuple[int, str], list[str]]   # (class index, name) -> captions that mention the name
    set_name: str = "counts"
    draw: int = 0
    answer_retries: int = 2
    stage: str = STAGE

    def fingerprint(self, client: LLMClient) -> dict:
        return {"template": self.template.ref, "template_sha256": self.template.sha256, "model": client.model,
                "draw": self.draw}

    def header(self, client: LLMClient) -> dict:
        return {"template": self.template.manifest_entry(), "sampling": self.template.sampling}

    def plan_requests(self, client: LLMClient) -> list[LLMRequest]:
        question = self.template.questions[0]
        requests = []
        for (c, name), captions in sorted(self.samples.items()):
            for k, caption in enumerate(captions):
                shown = TOO_LONG if len(caption.split()) > _MAX_WORDS else caption
                messages = self.template.render(question, self.classes.names[c], extra={"name": name, "caption": shown})
                requests += client.plan(messages, self.template.sampling, draw=self.draw, tag=(c, name, k))
        return requests

    def journal_fields(self, request: LLMRequest) -> dict:
        return {"class_index": request.tag[0], "name": request.tag[1], "sample": request.tag[2]}

    def new_state(self) -> Judgements:
        return Judgements()

    def on_answer(self, run: StageRun, request: LLMRequest, response: LLMResponse) -> Verdict:
        verdict = read_yes_no(response.choices[0].get("text") if response.choices else "")
        if verdict is None:
            again = run.reask(request)
            if not again:
                run.state.unusable += 1
            return Verdict(False, "neither yes nor no", again)
        key = (request.tag[0], request.tag[1])
        run.state.judged[key] = run.state.judged.get(key, 0) + 1
        run.state.relevant[key] = run.state.relevant.get(key, 0) + int(verdict)
        return Verdict(True)

    def on_failure(self, run: StageRun, request: LLMRequest, failure: LLMRequestFailed) -> list[LLMRequest]:
        run.state.failed.append({"class_index": request.tag[0], "class_name": self.classes.names[request.tag[0]],
                                 "question": request.tag[1], "sample_index": request.tag[2], "error": failure.error})
        return []

    def finish(self, run: StageRun) -> StageOutput:
        state = run.state
        section = {"names_checked": len(self.samples), "judged": sum(state.judged.values()),
                   "relevant": sum(state.relevant.values()), "unanswered": len(state.failed),
                   "unusable": state.unusable}
        return StageOutput([], "partial" if state.failed else "complete", {}, before={"relevance": section},
                           failures=state.failed)
