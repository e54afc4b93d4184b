"""`promptgen run PIPELINE.toml`: the whole job, declared once, rerun cheaply.

A pipeline is datasets × steps. Each step is one promptgen command (describe, differentiate,
synonyms, import, rename, head, eval, audit, features) with its options written as they are on
the command line (`style = "cupl"`, `clip-model = "ViT-B-32"`, flags as `true`, repeatable options
as lists); `[defaults]` gives options to every step whose command takes them.

Every (dataset, step) unit is addressed by a key: the sha256 of its command, its options, the
dataset's class list, the content of what it reads (prompt-set versions by their records'
sha256, files by theirs, query templates by theirs) and nothing else. The key and the output are
kept in ROOT/pipelines/NAME.json; a rerun skips a unit whose key and output are unchanged, and a
unit whose input changed runs again, which changes the key of what reads it in turn. A unit that
was interrupted resumes its unfinished version (its paid answers are in the journal and cache).

References: a step's set options (`set`, `sets`, `against`, the sources of `build`) name sets; a
set another step writes is pinned to the version that step wrote. An option whose value is the
name of a step that writes a file (head, eval, rename, features, audit) becomes that file's path.
"""

from promptgen.pipeline.config import Pipeline, Step, load_pipeline, step_datasets
from promptgen.pipeline.runner import PipelineRunner, UnitPlan
from promptgen.pipeline.state import PipelineState

__all__ = ["Pipeline", "Step", "load_pipeline", "step_datasets", "PipelineRunner", "UnitPlan", "PipelineState"]
