"""`load(name)` -> a Model: the Hugging Face model, its tokenizer/processor, its anatomy, and prompt building.

Shipped names need no network: `toy-llava` / `toy-vicuna` (the trained model organism under data/models/, and
its other training seeds such as `toy-llava-seed1`),
`tiny-random-llava` / `tiny-random-vicuna` (built from configs, seeded; for tests and demos), and tiny random models
of the families beyond Llava (`TINY_FAMILIES`: `tiny-random-qwen2-vl`, `tiny-random-qwen2.5-vl`, `tiny-random-qwen3-vl`,
`tiny-random-gemma3`, `tiny-random-gemma3-text`, `tiny-random-llava-onevision`, `tiny-random-idefics3`,
`tiny-random-smolvlm`, `tiny-random-internvl`, `tiny-random-internvl-qwen3`, `tiny-random-mistral3`,
`tiny-random-mistral3-ministral3`, `tiny-random-glm4v`). Anything else is a Hugging Face id or a local folder of a
supported model (Llava, LLaVA-NeXT, Qwen2-VL, Qwen2.5-VL, Qwen3-VL, Gemma 3, LLaVA-OneVision, Idefics3, SmolVLM,
InternVL, Mistral 3, GLM-4.1V, or a Llama-family or Gemma 3 language model), loaded from local files only. The
multi-question organism of chapter 6 is `toy-llava-multi` (`toy-vicuna-multi`, `toy-llava-multi-seed1`).
"""
from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
from pathlib import Path

import torch
import transformers
from transformers.utils import cached_file

from .organism import build
from .anatomy import Anatomy
from .devices import resolve_device
from .errors import LlavamechError
from .explain import explain
from .imaging import load_image
from .memory import check_fits
from . import families, patches, questions
from .paths import MODELS_DIR
from .trace import Trace, run_trace

# Tiny random models of every supported class (tests, demos): name -> (multimodal?, build options).
TINY = {"tiny-random-llava": (True, {}), "tiny-random-vicuna": (False, {}),
        "tiny-random-llava-mistral": (True, {"family": "mistral", "kv_heads": 2}),
        "tiny-random-llava-qwen2": (True, {"family": "qwen2", "kv_heads": 2}),
        "tiny-random-llava-next": (True, {"next": True}),
        "tiny-random-mistral": (False, {"family": "mistral", "kv_heads": 2}),
        "tiny-random-qwen2": (False, {"family": "qwen2", "kv_heads": 2})}
# The families of llavamech.families (kept apart from TINY, whose every entry the appendix on the real Llava tabulates).
TINY_FAMILIES = {"tiny-random-qwen2-vl": ("tiny_qwen_vl", {"version": "2"}),
                 "tiny-random-qwen2.5-vl": ("tiny_qwen_vl", {"version": "2.5"}),
                 "tiny-random-qwen3-vl": ("tiny_qwen_vl", {"version": "3"}),
                 "tiny-random-gemma3": ("tiny_gemma3", {}), "tiny-random-gemma3-text": ("tiny_gemma3_text", {}),
                 "tiny-random-llava-onevision": ("tiny_llava_onevision", {}),
                 "tiny-random-idefics3": ("tiny_idefics3", {}), "tiny-random-smolvlm": ("tiny_smolvlm", {}),
                 "tiny-random-internvl": ("tiny_internvl", {}),
                 "tiny-random-internvl-qwen3": ("tiny_internvl", {"text": "qwen3"}),
                 "tiny-random-mistral3": ("tiny_mistral3", {}),
                 "tiny-random-mistral3-ministral3": ("tiny_mistral3", {"text": "ministral3"}),
                 "tiny-random-glm4v": ("tiny_glm4v", {})}
SHIPPED = ("toy-llava", "toy-vicuna", *TINY, *TINY_FAMILIES)
ORGANISMS = "toy-llava, toy-vicuna, toy-llava-multi, toy-vicuna-multi"   # the trained ones (data/models/)
# Hugging Face model types llavamech reads: Llava-family wrappers and the language models they may carry.
MULTIMODAL = {"llava": "LlavaForConditionalGeneration", "llava_next": "LlavaNextForConditionalGeneration"}
LANGUAGE = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM"}


@contextlib.contextmanager
def _quiet():
    """Silence transformers' load-time chatter (the image processor's no-torchvision fallback notice, progress bars)."""
    level, bars = transformers.logging.get_verbosity(), transformers.logging.is_progress_bar_enabled()
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()  # "Loading weights" bars: noise for a 10 MB model and in the CLI
    try:
        yield
    finally:
        transformers.logging.set_verbosity(level)
        if bars:
            transformers.logging.enable_progress_bar()


def is_shipped(name: str) -> bool:
    """The organism's names, including its other training seeds (data/models/toy-llava-seed1, ...)."""
    return name in SHIPPED or (name.startswith("toy-") and "/" not in name and (MODELS_DIR / name).is_dir())


class Model:
    """A loaded model ready for tracing. `processor` is None for a text-only (Llama-family) model."""

    def __init__(self, name: str, hf, tokenizer, processor=None, device: str = "cpu"):
        self.name, self.hf, self.tokenizer, self.processor = name, hf.eval(), tokenizer, processor
        self.device = device
        self.anatomy = Anatomy.of(hf)
        self.family = families.of(hf)   # None for Llava, LLaVA-NeXT and the language models alone

    def __repr__(self):
        a = self.anatomy
        kind = type(self.hf).__name__.removesuffix("ForConditionalGeneration").removesuffix("ForCausalLM")
        return (f"Model({self.name!r}: {kind}, {a.n_layers} layers x {a.n_heads} heads "
                f"({a.n_kv_heads} kv) of {a.head_dim}, d={a.d_model}, vocab {a.lm_head.out_features})")

    @property
    def is_multimodal(self) -> bool:
        return self.processor is not None

    @property
    def dtype(self) -> torch.dtype:
        return self.anatomy.lm_head.weight.dtype

    @property
    def max_positions(self) -> int | None:
        """How many token positions the language model has (its max_position_embeddings); for Ministral 3, those
        before its Llama 4 query scaling starts (past original_max_position_embeddings its attention scales each
        query by its position, which the trace's attention weights from the scored position do not follow)."""
        config = getattr(self.hf.config, "text_config", self.hf.config)
        rope = getattr(config, "rope_parameters", None) or {}
        if rope.get("llama_4_scaling_beta"):
            return rope["original_max_position_embeddings"]
        return getattr(config, "max_position_embeddings", None)

    # ---- prompts ----
    def prompt(self, question: str, context: str | None = None, image: bool = False) -> str:
        """The paper's prompt (the book's introduction). A question of one of the types of llavamech.questions
        (colour: "What is the color of the X?"; reverse lookup, existence, counting, position), in any case and
        spacing, with or without its "?", is asked in its canonical wording with its answer prefix ("The color of
        the X is"), so that the answer is the next token. Any other question is asked as given. A family beyond
        Llava (llavamech.families) is asked in its own chat template, the answer prefix opening the assistant's turn."""
        question = self._user_text(question, "question").strip()
        context = self._user_text(context, "context")
        if not question:
            raise LlavamechError("the question is empty; ask e.g. 'What is the color of the dog?'")
        typed = questions.parse(question)
        if typed and "colour" in typed.text and not self.knows("colour"):
            # the asker's "colour" is kept for a model that knows it; one that spells only "color" (the toy
            # organism) is asked the canonical wording rather than refused
            typed = questions.types()["colour"].ask(**typed.slots)
        if typed:
            question = typed.text
        if self.family is not None:
            text = (f"{context.strip()}\n" if context and context.strip() else "") + question
            return families.chat_prompt(self, text, image, typed.answer_prefix if typed else "")
        head = ("<image>\n" if image else "") + (f"{context.strip()}\n" if context and context.strip() else "")
        return f"USER: {head}{question}\nASSISTANT:{typed.answer_prefix if typed else ''}"

    def _user_text(self, text, what: str) -> str:
        """A question or context as given: a string without the tokenizer's special tokens (a literal <image> would be
        read as an image the prompt does not carry, or misplace the one it does)."""
        if text is None and what == "context":
            return ""
        if not isinstance(text, str):
            raise LlavamechError(f"the {what} must be text, got {type(text).__name__}")
        special = set(self.tokenizer.all_special_tokens) | {t.content for t in self.tokenizer.added_tokens_decoder.values()
                                                            if t.special}
        found = sorted(t for t in special if t and t in text)
        if found:
            raise LlavamechError(f"the {what} holds {found[0]!r}, a special token of {self.name}'s tokenizer; remove "
                                 "it (an image is given as the image, never in the text)")
        return text

    def inputs(self, image=None, question: str = "", context: str | None = None) -> dict:
        """Tokenised model inputs (batch of one) on the model's device."""
        if image is not None and not self.is_multimodal:
            raise LlavamechError(f"{self.name} is a text-only model and cannot take an image; "
                                 "use a Llava model, or give the facts as the context")
        text = self.prompt(question, context, image=image is not None)
        special = self._tokenizer_options()
        if image is not None:
            image = load_image(image)
            if self.family is not None:
                families.check_image(self, image)
            enc = self.processor(images=image, text=text, return_tensors="pt", **special)
            if self.family is not None and self.family.sized:   # InternVL: its layout needs the image's size
                enc["image_sizes"] = torch.tensor([[image.height, image.width]])
        else:
            enc = self._tokens(text)
        self._check_vocabulary(text, enc["input_ids"], question)
        self._check_length(enc["input_ids"])
        keys = ("input_ids", "attention_mask", "pixel_values", "image_sizes",
                *(self.family.input_keys if self.family and image is not None else ()))
        enc = {k: v.to(self.device) for k, v in enc.items() if k in keys}
        if "pixel_values" in enc:
            enc["pixel_values"] = enc["pixel_values"].to(self.dtype)
        return enc

    def check_question(self, question: str, context: str | None = None, image: bool = True) -> None:
        """Refuse, in one line, a question (and context) this model cannot be asked, from its words alone: what
        `inputs` would refuse on its vocabulary, without an image or a forward pass (a long run checks every item
        before it computes any)."""
        text = self.prompt(question, context, image=image)
        self._check_vocabulary(text, self._tokens(text)["input_ids"], question)

    def _tokenizer_options(self) -> dict:
        # a chat template writes its own special tokens (Gemma's <bos>): the tokenizer must not add them again
        return {"add_special_tokens": False} if self.family is not None else {}

    def _tokens(self, text: str) -> dict:
        """The prompt's text alone, tokenised as `inputs` tokenises a prompt without an image."""
        return self.tokenizer(text, return_tensors="pt", **self._tokenizer_options())

    def _check_length(self, input_ids: torch.Tensor) -> None:
        """Positions past max_position_embeddings are extrapolated: the model answers, wrongly and without a word."""
        n, limit = input_ids.shape[-1], self.max_positions
        if limit is not None and n > limit:
            raise LlavamechError(f"the prompt is {n} tokens long (image patches included), more than the {limit} "
                                 f"positions of {self.name}; shorten the context or the question")

    def _check_vocabulary(self, text: str, input_ids: torch.Tensor, question: str = "") -> None:
        unk = self.tokenizer.unk_token_id
        if unk is None or not (input_ids == unk).any():
            return
        vocab = self.tokenizer.get_vocab()
        # the chat template's markup (<start_of_turn>, [INST]) is made of added tokens, known whole: not the culprit
        markup = {*self.tokenizer.all_special_tokens, *(t.content for t in self.tokenizer.added_tokens_decoder.values())}
        for special in sorted(markup, key=len, reverse=True):
            text = text.replace(special, " ")
        words = [w for w, _ in self.tokenizer.backend_tokenizer.pre_tokenizer.pre_tokenize_str(text) if w not in vocab]
        if not words:   # the asker's words are all known: the unknown piece is the prompt's own wording
            raise LlavamechError(f"{self.name}'s tokenizer does not know a word of its own prompt template; it cannot "
                                 "be asked this way")
        word = words[0]
        typed = questions.parse(question)
        wording = re.findall(r"\w+", (typed.text + " " + typed.answer_prefix).lower()) if typed else []
        if typed and word.lower() in wording and word.lower() not in " ".join(typed.slots.values()).lower().split():
            # a word of the type's own wording ("Is there a ...?"): the model was never taught this type of question
            other = " (toy-llava-multi is the organism trained on every question type)" if self.name.startswith(
                "toy-") else ""
            raise LlavamechError(f"{self.name} does not know {typed.type} questions: '{word}' of their wording is out "
                                 f"of its vocabulary{other}")
        case = f" (it knows '{word.lower()}': its words are lower-case)" if word.lower() in vocab else ""
        raise LlavamechError(f"'{word}' is out of {self.name}'s vocabulary{case}; "
                             "use words of its world (data/world.json lists the animals and colours)")

    def knows(self, word: str) -> bool:
        """Whether `word` is in the vocabulary (a word-level tokenizer maps unknown words to <unk>)."""
        ids = self.tokenizer(" " + word, add_special_tokens=False)["input_ids"]
        return bool(ids) and self.tokenizer.unk_token_id not in ids

    def token_id(self, word: str) -> int:
        """The id of `word` as the answer token (for Llama's SentencePiece: the '▁word' piece; a word split into
        pieces is read by its first, as the paper reads a multi-token answer). One word: an unknown word (the
        toy's tokenizer maps it to <unk>) or several words would score some other token."""
        if not isinstance(word, str) or len(word.split()) != 1:
            raise LlavamechError(f"token_id takes one word, such as 'brown', got {word!r}")
        ids = self.tokenizer(" " + word.strip(), add_special_tokens=False)["input_ids"]
        ids = [i for i in ids if self.tokenizer.convert_ids_to_tokens(i) not in ("▁", "")]
        if not ids or self.tokenizer.unk_token_id in ids:
            lower = word.lower() != word and self.knows(word.lower())
            raise LlavamechError(f"'{word}' has no token in {self.name}'s vocabulary"
                                 + (f" (it knows '{word.lower()}': its words are lower-case)" if lower else ""))
        return ids[0]

    # ---- analysis entry points ----
    def trace(self, image=None, question: str = "", context: str | None = None, all_positions: bool = False) -> Trace:
        """One hooked forward pass at the last prompt position (see llavamech.trace)."""
        if not isinstance(all_positions, bool):
            raise LlavamechError(f"all_positions must be True or False, got {all_positions!r}")
        return run_trace(self.hf, self.anatomy, self.inputs(image, question, context), self.tokenizer, all_positions)

    def explain(self, image=None, question: str = "", context: str | None = None, method: str = "tool",
                heads: int | None = None, **options):
        """The paper's tool: answer, head scores, and the best head's per-patch map (see llavamech.explain; its
        options `top_k`, `map_heads`). Any other `method` of llavamech.patches ("top-k" with `heads`, default 3;
        "attention"; "ablation", "gradient" and "ig" with `means`, "ig" with `ig_steps`; "random" with `seed`) puts
        its scores in `patch_grid` instead."""
        patches.check_method(method, self, heads)
        allowed = patches.OPTIONS[method]
        extra = sorted(set(options) - set(allowed)) + (["heads"] if heads is not None and method != "top-k" else [])
        if extra:
            takes = ", ".join(allowed + (("heads",) if method == "top-k" else ())) or "no options"
            raise LlavamechError(f"the {method} method takes {takes}, not {', '.join(extra)}")
        if method == "tool":
            return explain(self, image=image, question=question, context=context, **options)
        if context:
            raise LlavamechError(f"the {method} method scores image patches: give an image and a question, "
                                 "without a context")
        return patches.explained(self, image, question, method,
                                 **({"heads": heads} if heads is not None else {}), **options)


def load(name: str = "toy-llava", device: str = "cpu", dtype: torch.dtype | str = torch.float32,
         device_map: str | dict | None = None) -> Model:
    """Load a model by name (see the module docstring). fp32 by default, as the paper; float16/bfloat16 to save
    memory (readouts are still computed in float32). `device_map="auto"` spreads a model too big for one GPU over
    the GPUs (and CPU) with accelerate; the inputs then go to the device of the embeddings."""
    name = str(name) if isinstance(name, os.PathLike) else name   # a folder given as a Path
    if not isinstance(name, str) or not name.strip():
        raise LlavamechError("the model name is empty; use e.g. toy-llava or llava-hf/llava-1.5-7b-hf")
    if name.endswith("/") and is_shipped(name.rstrip("/")) and not Path(name).expanduser().exists():
        name = name.rstrip("/")   # "toy-llava/" typed with a shell's completion: the shipped model, not a Hub id
    device = resolve_device(device)
    dtype = _dtype(dtype)
    if device_map is not None and device_map != "auto" and not isinstance(device_map, dict):
        raise LlavamechError(f"device_map must be \"auto\" or a dict of module -> device, got {device_map!r}")
    if device_map is not None:
        if importlib.util.find_spec("accelerate") is None:
            raise LlavamechError("device_map needs accelerate, which is not installed; pip install accelerate")
        if name in TINY or name in TINY_FAMILIES:
            raise LlavamechError(f"device_map is for models loaded from a folder or the Hub, not {name}")
    # the tiny builders seed torch's global generator; fork_rng gives the caller's random state back afterwards
    with _quiet(), torch.random.fork_rng(devices=[]):
        if name in TINY:
            multimodal, options = TINY[name]
            built = build.tiny_llava(**options) if multimodal else (*build.tiny_vicuna(**options), None)
            model = Model(name, *built, device)
        elif name in TINY_FAMILIES:
            from . import tiny_vl   # imports a model class of every family: 0.35 s that only these names need
            builder, options = TINY_FAMILIES[name]
            built = getattr(tiny_vl, builder)(**options)
            model = Model(name, *built, *([None] if len(built) == 2 else []), device)
        else:
            folder = MODELS_DIR / name if is_shipped(name) else Path(name).expanduser()
            if name in SHIPPED and not folder.exists():
                raise LlavamechError(f"{name} is not in {MODELS_DIR}; train it with "
                                     "`python -m llavamech train-organism --out data/models`")
            model = _from_pretrained(name, folder if folder.exists() else name, device, dtype, device_map)
    if device_map is None:
        model.hf.to(device=device, dtype=dtype)
    else:
        model.device = str(model.anatomy.embed.weight.device)
    return model


def _dtype(dtype) -> torch.dtype:
    names = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
    if isinstance(dtype, torch.dtype) and dtype in names.values():
        return dtype
    if not isinstance(dtype, str) or dtype not in names:
        raise LlavamechError(f"unknown dtype '{dtype}'; use float32, float16 or bfloat16")
    return names[dtype]


def _from_pretrained(name: str, source, device: str, dtype: torch.dtype = torch.float32, device_map=None) -> Model:
    if Path(source).is_file():   # config.json or a weights file: transformers would read part of a model from it
        raise LlavamechError(f"model {name} is a file; give the folder that holds it, with config.json and the "
                             f"weights ({Path(source).parent})")
    try:
        config = transformers.AutoConfig.from_pretrained(source, local_files_only=True)
    except (OSError, ValueError):
        if Path(source).is_dir():
            what = ("its config.json is not a readable model configuration" if (Path(source) / "config.json").is_file()
                    else "no config.json")
            raise LlavamechError(f"{source} is a folder without a model ({what}); give the folder that "
                                 "save_pretrained or huggingface-cli download wrote") from None
        if str(name).startswith(("/", ".", "~")) or str(name).count("/") > 1:
            raise LlavamechError(f"model folder not found: {name}") from None
        if "/" not in str(name):
            raise LlavamechError(f"unknown model '{name}'; use an organism ({ORGANISMS}, or another seed such as "
                                 "toy-llava-seed1), a tiny random model (tiny-random-llava, tiny-random-qwen2-vl, ...: "
                                 "llavamech.models.SHIPPED), a local folder, or a Hugging Face id such as "
                                 "llava-hf/llava-1.5-7b-hf") from None
        raise LlavamechError(f"'{name}' is not available offline; download it once with "
                             f"`huggingface-cli download {name}` (needs network) or pass a local folder") from None
    kwargs = dict(local_files_only=True, attn_implementation="sdpa", dtype=dtype,   # the trace needs no eager weights
                  **({"device_map": device_map} if device_map is not None else {}))
    text_type = getattr(getattr(config, "text_config", config), "model_type", None)
    family = families.FAMILIES.get(config.model_type)
    if (family is None or text_type not in family.text_types) and (
            config.model_type not in MULTIMODAL and config.model_type not in LANGUAGE or text_type not in LANGUAGE):
        raise LlavamechError(f"not supported: '{name}' is a {config.model_type} model"
                             + (f" over {text_type}" if text_type != config.model_type else "")
                             + f"; llavamech reads {' and '.join(MULTIMODAL)} models over {', '.join(LANGUAGE)} "
                               f"language models, those language models alone, and {', '.join(families.FAMILIES)} "
                               "models")
    if device.startswith("cuda") and device_map is None:   # too big for the card: one line before any weight loads
        check_fits(config, str(dtype).removeprefix("torch."), torch.cuda.mem_get_info(torch.device(device))[0],
                   where=device)
    if family is not None:
        hf = family.model_class.from_pretrained(source, **kwargs)
        tokenizer = _tokenizer(source)
        processor = families.load_processor(family, source, tokenizer, hf) if family.processor_name else None
        return Model(name, hf, tokenizer, processor, device)
    if config.model_type in MULTIMODAL:
        hf = getattr(transformers, MULTIMODAL[config.model_type]).from_pretrained(source, **kwargs)
        processor = transformers.AutoProcessor.from_pretrained(source, local_files_only=True)
        return Model(name, hf, processor.tokenizer, processor, device)
    hf = getattr(transformers, LANGUAGE[config.model_type]).from_pretrained(source, **kwargs)
    return Model(name, hf, _tokenizer(source), None, device)


def _tokenizer(source):
    """The saved tokenizer. A generic one (a tokenizer.json saved as TokenizersBackend) is loaded as it was saved:
    AutoTokenizer would otherwise rebuild the model type's own class (Qwen2Tokenizer) from it and split differently."""
    saved = cached_file(source, "tokenizer_config.json", local_files_only=True, _raise_exceptions_for_missing_entries=False)
    generic = saved and json.loads(Path(saved).read_text()).get("tokenizer_class") in ("TokenizersBackend",
                                                                                        "PreTrainedTokenizerFast")
    cls = transformers.PreTrainedTokenizerFast if generic else transformers.AutoTokenizer
    return cls.from_pretrained(source, local_files_only=True)


def model_card(name: str) -> dict:
    """The shipped organism's measured numbers (data/models/NAME/card.json), for the book."""
    return json.loads((MODELS_DIR / name / "card.json").read_text())
