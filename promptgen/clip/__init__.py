"""CLIP side of promptgen: models, the text embedding engine, head builders, image features and
evaluation. Import cost (torch, open_clip) is paid only by the commands that need it."""

from promptgen.clip.api import build_named_head, collect_sources, make_head
from promptgen.clip.embed import EmbeddingCache, TextEncoder
from promptgen.clip.evaluate import evaluate_heads
from promptgen.clip.heads import BUILDERS, Head, build_head, list_builders, load_head, register_builder, save_head
from promptgen.clip.encode import encode_images, write_features
from promptgen.clip.images import ImageFeatures, load_feature_file, open_image_set
from promptgen.clip.models import ClipModel, list_clip_models, load_clip
from promptgen.clip.sources import PromptSource, list_template_sets, source_from_set, source_from_templates

__all__ = ["make_head", "build_named_head", "collect_sources", "EmbeddingCache", "TextEncoder", "evaluate_heads",
           "BUILDERS", "Head", "build_head", "list_builders", "load_head", "register_builder", "save_head",
           "ImageFeatures", "encode_images", "write_features", "load_feature_file", "open_image_set", "ClipModel", "list_clip_models",
           "load_clip", "PromptSource", "list_template_sets", "source_from_set", "source_from_templates"]
