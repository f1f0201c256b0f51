"""Recipes (evalkit/models/recipes.py, st_folder.py): a sentence-transformers folder is encoded as
sentence-transformers encodes it and scored as plain mteb scores it; a catalog recipe applied to a
folder follows its source run (the BGE authors' FlagDRESModel runner, the C-MTEB runner,
bge-en-icl's per-task instructions and examples); mteb's implementation on request."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from evalkit import EvalkitError
from evalkit.models.catalog import BGE_EN, BGE_ZH, get_spec
from evalkit.plan import resolve_model

TEXTS = ["the bank card was good", "a query about protein and gene", "music", "the king and the queen of the city river",
         "Retrieve relevant passages that answer the question of science and cell", "yes"]


class Meta:
    def __init__(self, name, type_):
        self.name, self.type = name, type_


def st_folder(base: Path, dest: Path, pooling="mean", normalize=False, dense=False, prompts=None, max_seq_length=64,
              lower=False, default_prompt=None, similarity=None) -> Path:
    """A sentence-transformers folder over the tiny BERT: modules.json and its module folders."""
    import torch
    from safetensors.torch import save_file

    shutil.copytree(base, dest)
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    (dest / "1_Pooling").mkdir()
    modes = pooling.split("+")
    (dest / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 32, "pooling_mode": modes[0] if len(modes) == 1 else modes}))
    (dest / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_seq_length, "do_lower_case": lower}))
    if dense:
        d = dest / "2_Dense"
        d.mkdir()
        torch.manual_seed(5)
        n_in = 32 * len(modes)
        save_file({"linear.weight": torch.randn(16, n_in) * 0.2, "linear.bias": torch.randn(16) * 0.1}, str(d / "model.safetensors"))
        (d / "config.json").write_text(json.dumps({"in_features": n_in, "out_features": 16, "bias": True,
                                                    "activation_function": "torch.nn.modules.activation.Tanh"}))
        modules.append({"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"})
    if normalize:
        (dest / "3_Normalize").mkdir()
        modules.append({"idx": len(modules), "name": str(len(modules)), "path": "3_Normalize", "type": "sentence_transformers.models.Normalize"})
    (dest / "modules.json").write_text(json.dumps(modules))
    cfg = {"prompts": prompts or {}, "default_prompt_name": default_prompt}
    if similarity:
        cfg["similarity_fn_name"] = similarity
    (dest / "config_sentence_transformers.json").write_text(json.dumps(cfg))
    return dest


def evalkit_vectors(spec, texts, task=Meta("STS12", "STS"), prompt_type=None, tmp=None):
    from evalkit.evaluation import Models
    from evalkit.models.adapters import EmbeddingAdapter
    from evalkit.plan import Settings

    model = resolve_model(spec)
    models = Models(Settings(batch_size=4, use_cache=False, device="cpu"))
    try:
        emb = models.embedder(model)
        adapter = EmbeddingAdapter(model.spec, emb)
        return emb.embed(adapter.format_inputs(list(texts), task, prompt_type))
    finally:
        models.close()


VARIANTS = [  # (pooling, Normalize, Dense)
    ("mean", False, False), ("cls", True, False), ("max", False, True), ("mean_sqrt_len_tokens", True, False),
    ("weightedmean", False, False), ("lasttoken", True, True), ("mean+max", True, True),
]


@pytest.mark.parametrize("pooling,normalize,dense", VARIANTS)
def test_st_folder_vectors_equal_sentence_transformers(tiny_bert, tmp_path, pooling, normalize, dense):
    from sentence_transformers import SentenceTransformer

    folder = st_folder(tiny_bert, tmp_path / "st", pooling, normalize, dense)
    ref = SentenceTransformer(str(folder), device="cpu").encode(TEXTS, batch_size=3, convert_to_numpy=True)
    spec = resolve_model(get_spec(str(folder))).spec
    assert spec.recipe == "sentence-transformers" and spec.normalize == normalize
    assert spec.pooling == pooling.replace("lasttoken", "last_token") and spec.max_length == 64
    got = evalkit_vectors(get_spec(str(folder)), TEXTS)
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, atol=1e-5)


def test_st_folder_prompts_lowercase_and_default_prompt(tiny_bert, tmp_path):
    """Prompts as plain mteb 2.26 + sentence-transformers pick them: the query/document prompt on those
    inputs, a task-name prompt before a type prompt, the default prompt on symmetric inputs only."""
    from sentence_transformers import SentenceTransformer

    prompts = {"query": "query: ", "document": "passage: ", "STS": "sts: ", "STS12": "twelve: ", "other": "other: "}
    folder = st_folder(tiny_bert, tmp_path / "st", "mean", True, prompts=prompts, lower=True, default_prompt="other")
    st = SentenceTransformer(str(folder), device="cpu")
    upper = [t.upper() for t in TEXTS]
    for task, ptype, prompt in [(Meta("SciFact", "Retrieval"), "query", "query: "), (Meta("SciFact", "Retrieval"), "document", "passage: "),
                                (Meta("STS12", "STS"), None, "twelve: "), (Meta("STS13", "STS"), None, "sts: "),
                                (Meta("Banking77Classification", "Classification"), None, "other: ")]:
        ref = st.encode(upper, prompt=prompt, batch_size=3, convert_to_numpy=True)
        np.testing.assert_allclose(evalkit_vectors(get_spec(str(folder)), upper, task, ptype), ref, atol=1e-5)


def test_st_folder_scores_equal_plain_mteb(tiny_bert, tmp_path, monkeypatch):
    """Real tasks, run through the CLI: the same scores as plain mteb with sentence-transformers."""
    from sentence_transformers import SentenceTransformer

    from evalkit.cli import main
    from evalkit.tasks import Registry, build_task
    from tests.test_task_types import plain_scores

    monkeypatch.setenv("EVALKIT_CACHE", str(tmp_path / "cache"))
    prompts = {"query": "query: ", "document": "passage: "}
    diffs = {}
    for i, (pooling, normalize, dense) in enumerate([("mean", False, True), ("cls", True, False)]):
        folder = st_folder(tiny_bert, tmp_path / f"st{i}", pooling, normalize, dense, prompts=prompts if i == 0 else None,
                           similarity="dot" if i == 1 else None)
        out = tmp_path / f"out{i}"
        names = ("STS12", "SciFact") if i == 0 else ("STS12",)  # the prompts matter where queries and documents differ
        assert main(["run", "--model", str(folder), "--tasks", ",".join(names), "--output", str(out), "--batch-size", "32"]) == 0
        for name in names:
            doc = json.loads(next(out.rglob(f"{name}.json")).read_text())
            assert doc["evalkit"]["recipe"]["name"] == "sentence-transformers"
            mine = doc["scores"]["test"][0]
            ref = plain_scores(SentenceTransformer(str(folder), device="cpu"), build_task(Registry().task(name)))["test/default"]
            for key, value in ref.items():
                if isinstance(value, float):
                    diffs[(i, name, key)] = abs(mine[key] - value)
    # The vectors equal sentence-transformers' to 1e-5 (the test above), not bit for bit: the batches
    # are padded differently. A random 32-wide model's similarities lie within about 1e-6 of each other,
    # so that float noise reorders near-ties: the main scores agree to 1e-4, every metric of rank or
    # correlation to 5e-3 (recall@1000 of CLS pooling moves by one judged document in 300 queries);
    # mteb's nAUC calibration metrics, which read the tied scores themselves, are left out.
    for (i, name, key), d in diffs.items():
        if key == "main_score":
            assert d < 1e-4, (i, name, key, d)
        elif not key.startswith("nauc"):
            assert d < 5e-3, (i, name, key, d)


def test_st_folder_refusals(tiny_bert, tmp_path):
    folder = st_folder(tiny_bert, tmp_path / "st")
    modules = json.loads((folder / "modules.json").read_text())
    modules.append({"idx": 2, "name": "2", "path": "2_LSTM", "type": "sentence_transformers.models.LSTM"})
    (folder / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(EvalkitError, match="LSTM.*not one evalkit reproduces"):
        resolve_model(get_spec(str(folder)))
    folder2 = st_folder(tiny_bert, tmp_path / "st2")
    (folder2 / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode": "sparse_max"}))
    with pytest.raises(EvalkitError, match="sparse_max"):
        resolve_model(get_spec(str(folder2)))


def test_flags_win_over_the_folder(tiny_bert, tmp_path):
    folder = st_folder(tiny_bert, tmp_path / "st", "mean", True)
    spec = resolve_model(get_spec(str(folder), pooling="cls", max_length=32)).spec
    assert (spec.pooling, spec.max_length, spec.normalize) == ("cls", 32, True)
    assert dict(spec.sources)["pooling"] == "flag" and dict(spec.sources)["normalize"] == "modules.json Normalize"


def test_query_instruction_flag_is_a_prompt_recipes_query_prompt(tiny_bert, tmp_path):
    from evalkit.models.recipes import inputs_of

    folder = st_folder(tiny_bert, tmp_path / "st", "mean", True, prompts={"query": "q: ", "document": "d: "})
    spec = resolve_model(get_spec(str(folder), query_instruction="Find: ")).spec
    assert inputs_of(spec, "SciFact", "Retrieval") == {"query": "Find: ", "document": "d: "}
    assert inputs_of(spec, "STS12", "STS") == {"input": ""}


def test_minilm_folder_is_read_as_its_catalog_entry(minilm_path):
    by_folder = resolve_model(get_spec(str(minilm_path))).spec
    by_name = resolve_model(get_spec("all-MiniLM-L6-v2")).spec
    for f in ("pooling", "max_length", "normalize", "lowercase", "dense", "similarity", "query_prefix", "passage_prefix"):
        assert getattr(by_folder, f) == getattr(by_name, f), f
    assert by_folder.recipe_variant is None


# ----------------------------------------------------------------------------- the BGE authors' runners
class FlagDRESReference:
    """research/C_MTEB/flag_dres_model.FlagDRESModel as eval_MTEB.py configures it, step by step: CLS,
    max_length 512 (capped at the model's 128 positions here), normalize_embeddings=False (True for the
    C-MTEB runner), the instruction prepended in encode_queries only, set per task by the runner's list."""

    def __init__(self, path, normalize, instruction, tasks):
        from transformers import AutoModel, AutoTokenizer

        self.tok = AutoTokenizer.from_pretrained(str(path))
        self.model = AutoModel.from_pretrained(str(path)).eval()
        self.normalize, self.instruction, self.tasks = normalize, instruction, tasks

    def encode(self, sentences):
        import torch

        with torch.inference_mode():
            out = []
            for i in range(0, len(sentences), 2):
                b = self.tok(sentences[i:i + 2], padding=True, truncation=True, return_tensors="pt", max_length=min(512, 128))
                v = self.model(**b, return_dict=True).last_hidden_state[:, 0]
                out.append(torch.nn.functional.normalize(v, dim=-1) if self.normalize else v)
            return torch.cat(out).numpy()

    def encode_queries(self, task, queries):
        instr = self.instruction if self.tasks(task) else None
        return self.encode([f"{instr}{q}" for q in queries] if instr else queries)

    def encode_corpus(self, corpus):
        return self.encode([f"{d.get('title', '')} {d['text']}".strip() for d in corpus])


EN_RULE = lambda t: "CQADupstack" in t or t in ["Touche2020", "SciFact", "TRECCOVID", "NQ", "NFCorpus", "MSMARCO", "HotpotQA",  # noqa: E731
                                                  "FiQA2018", "FEVER", "DBPedia", "ClimateFEVER", "SCIDOCS"]
ZH_RULE = lambda t: t in ["T2Retrieval", "MMarcoRetrieval", "DuRetrieval", "CovidRetrieval", "CmedqaRetrieval", "EcomRetrieval",  # noqa: E731
                          "MedicalRetrieval", "VideoRetrieval", "T2Reranking", "MMarcoReranking", "CMedQAv1-reranking", "CMedQAv2-reranking"]


@pytest.mark.parametrize("recipe,normalize,instruction,rule,tasks", [
    ("bge-base-en-v1.5", False, BGE_EN, EN_RULE,
     [("SciFact", "Retrieval"), ("ArguAna", "Retrieval"), ("QuoraRetrieval", "Retrieval"), ("CQADupstackGisRetrieval", "Retrieval"),
      ("AskUbuntuDupQuestions", "Reranking"), ("STS12", "STS"), ("Banking77Classification", "Classification"),
      ("TwentyNewsgroupsClustering", "Clustering"), ("TwitterURLCorpus", "PairClassification"), ("SummEval", "Summarization")]),
    ("bge-base-zh-v1.5", True, BGE_ZH, ZH_RULE,
     [("T2Retrieval", "Retrieval"), ("T2Reranking", "Reranking"), ("CMedQAv2-reranking", "Reranking"), ("AFQMC", "STS"),
      ("TNews", "Classification"), ("Ocnli", "PairClassification")]),
])
def test_bge_recipe_equals_the_authors_runner(tiny_bert, recipe, normalize, instruction, rule, tasks):
    """(a) The vectors evalkit hands mteb under --recipe bge-*-v1.5, for every task type, equal the
    authors' FlagDRESModel logic with its instruction rule, to 1e-5."""
    ref = FlagDRESReference(tiny_bert, normalize, instruction, rule)
    spec = get_spec(str(tiny_bert), recipe=recipe)
    assert spec.recipe_variant == f"recipe-{recipe}"
    queries = TEXTS[:4]
    docs = [{"title": "science", "text": t} for t in TEXTS[2:]] + [{"title": "", "text": "cell"}]
    for name, typ in tasks:
        task = Meta(name, typ)
        if typ in ("Retrieval", "Reranking"):
            np.testing.assert_allclose(evalkit_vectors(spec, queries, task, "query"), ref.encode_queries(name, queries), atol=1e-5)
            # mteb joins a document's title and text as the runner does
            mteb_docs = [(d["title"] + " " + d["text"]).strip() for d in docs]
            np.testing.assert_allclose(evalkit_vectors(spec, mteb_docs, task, "document"), ref.encode_corpus(docs), atol=1e-5)
        else:
            np.testing.assert_allclose(evalkit_vectors(spec, TEXTS, task, None), ref.encode(TEXTS), atol=1e-5)


def test_mteb_recipe_gives_mteb_prompts(tiny_bert):
    """--recipe mteb:BAAI/bge-base-en-v1.5: mteb's model_prompts (every query, ArguAna's and reranking's
    too; nothing on symmetric inputs) over the folder's files (here none: what SentenceTransformer builds
    for a plain folder, mean pooling, not normalised; its vectors are sentence-transformers')."""
    from sentence_transformers import SentenceTransformer

    from evalkit.models.recipes import inputs_of

    spec = resolve_model(get_spec(str(tiny_bert), recipe="mteb:BAAI/bge-base-en-v1.5")).spec
    assert (spec.pooling, spec.normalize) == ("mean", False)
    ref = SentenceTransformer(str(tiny_bert), device="cpu").encode(TEXTS, prompt=BGE_EN, convert_to_numpy=True)
    np.testing.assert_allclose(evalkit_vectors(get_spec(str(tiny_bert), recipe="mteb:BAAI/bge-base-en-v1.5"), TEXTS,
                                               Meta("ArguAna", "Retrieval"), "query"), ref, atol=1e-5)
    assert inputs_of(spec, "ArguAna", "Retrieval") == {"query": BGE_EN, "document": ""}
    assert inputs_of(spec, "AskUbuntuDupQuestions", "Reranking")["query"] == BGE_EN
    assert inputs_of(spec, "STS12", "STS") == {"input": ""}
    authors = resolve_model(get_spec(str(tiny_bert), recipe="bge-base-en-v1.5")).spec
    assert inputs_of(authors, "ArguAna", "Retrieval") == {"query": "", "document": ""}
    with pytest.raises(EvalkitError, match="no implementation"):
        resolve_model(get_spec(str(tiny_bert), recipe="mteb:nobody/nothing-v0"))
    with pytest.raises(EvalkitError, match="unknown recipe"):
        get_spec(str(tiny_bert), recipe="flag")


# ----------------------------------------------------------------------------- bge-en-icl
def test_icl_recipe_instructions_per_task(tiny_decoder):
    """bge-en-icl's own table (FlagEmbedding/evaluation/mteb/prompts.py): every MTEB(eng, v1) task its
    instruction, CQADupstack's sub-forums, C-MTEB names, the type-level defaults."""
    from evalkit.models.recipes import DATA, instruction_for

    spec = get_spec(str(tiny_decoder), recipe="bge-en-icl")
    ref = json.loads((Path(__file__).resolve().parents[2] / "shared/data/bge-en-icl-reference/instructions.json").read_text()) \
        if (Path(__file__).resolve().parents[2] / "shared/data/bge-en-icl-reference/instructions.json").is_file() else None
    full = json.loads((DATA / "bge-en-icl" / "instructions_full.json").read_text())
    types = {n: t for t, d in full.items() if not t.startswith("_") for n in d}
    types.update({n: "STS" for n in ("STS12", "STS13", "STS14", "STS15", "STS16", "STS17", "STS22", "STSBenchmark", "BIOSSES", "SICK-R")})
    types["SummEval"] = "Summarization"
    for name, instr in (ref or {}).items():
        assert instruction_for(spec, name, types.get(name, "Retrieval")) == instr, name
    assert instruction_for(spec, "Banking77Classification", "Classification") == "Given a online banking query, find the corresponding intents."
    assert instruction_for(spec, "STS12", "STS") == "Retrieve semantically similar text."
    assert instruction_for(spec, "CQADupstackGisRetrieval", "Retrieval").startswith("Given a question, retrieve detailed question descriptions")
    assert instruction_for(spec, "T2Retrieval", "Retrieval") == full["Retrieval"]["T2Retrieval"]


def test_icl_dry_run_shows_each_task_instruction_and_examples(tiny_decoder, capsys):
    from evalkit.cli import main

    assert main(["run", "--model", str(tiny_decoder), "--recipe", "bge-en-icl", "--tasks", "Banking77Classification,SciFact,STS12",
                 "--dry-run", "--no-cache", "--fewshot", "3"]) == 0
    out = capsys.readouterr().out
    assert "Given a online banking query, find the corresponding intents." in out
    assert "Given a scientific claim, retrieve documents that support or refute the claim." in out
    assert "Retrieve semantically similar text." in out
    for task, n in (("Banking77Classification", 3), ("SciFact", 3), ("STS12", 3)):
        line = next(x for x in out.splitlines() if x.startswith(f"recipe bge-en-icl {task} ["))
        assert f"{n} of the authors'" in line and f"mteb-examples/{task}.json" in line, line


def test_icl_authors_examples_in_the_model_input(tiny_decoder):
    """--selector authors: the task's examples in their file order, the prompt of SOURCES.md."""
    from evalkit.fewshot import FewshotFactory, Setting
    from evalkit.models.icl import ICLEmbedder
    from evalkit.models.recipes import examples_file
    from evalkit.tasks import Registry, build_task

    model = resolve_model(get_spec(str(tiny_decoder), recipe="bge-en-icl"))
    spec = model.spec
    emb = ICLEmbedder(model.path, query_max_length=512, passage_max_length=512, padding_side="right", devices="cpu")
    ts = Registry().task("SciFact")
    task = build_task(ts)
    prefixer = FewshotFactory(Setting(2, "authors"), spec, emb)(ts, task)
    examples = json.loads(examples_file(spec, "SciFact").read_text())
    instr = "Given a scientific claim, retrieve documents that support or refute the claim."
    got = prefixer("a claim", f"<instruct>{instr}\n<query>a claim", Meta("SciFact", "Retrieval"), "test", "default")
    expect = "\n\n".join(f"<instruct>{instr}\n<query>{e['query']}\n<response>{e['response']}" for e in examples[:2]) + "\n\n"
    assert got.startswith(expect) and got.endswith("\n<response>")
    assert prefixer.info["pool"]["default"]["source"].endswith("mteb-examples/SciFact.json")


ICL = Path(__file__).resolve().parent / "data" / "icl"


@pytest.mark.parametrize("path", ["flag", "run"])
def test_icl_authors_recipe_equals_flagembedding(path):
    """(c) bge-en-icl's instructions and examples, on a tiny random Mistral: evalkit's FlagICLModel and
    its run path (--recipe bge-en-icl, --selector authors) equal FlagEmbedding 1.4.2's FlagICLModel
    given the same (tests/data/icl/make_reference.py, run in FlagEmbedding's own venv), to 1e-5."""
    from evalkit import FlagICLModel
    from evalkit.fewshot import FewshotFactory, Setting
    from evalkit.models.adapters import EmbeddingAdapter
    from evalkit.models.icl import ICLEmbedder
    from evalkit.models.recipes import examples_file, instruction_for
    from evalkit.tasks import Registry, build_task

    ref = json.loads((ICL / "reference.json").read_text())
    arrays = np.load(ICL / "reference.npz")
    model = resolve_model(get_spec(str(ICL / "model"), recipe="bge-en-icl"))
    types = {"SciFact": "Retrieval", "Banking77Classification": "Classification", "STS12": "STS"}
    for t in ref["tasks"]:
        name, instr, k = t["task"], t["instruction"], t["k"]
        assert instruction_for(model.spec, name, types[name]) == instr
        if path == "flag":
            examples = [{"instruct": instr, **e} for e in json.loads(examples_file(model.spec, name).read_text())[:k]]
            m = FlagICLModel(str(model.path), query_instruction_for_retrieval=instr, examples_for_task=examples, batch_size=2, devices="cpu")
            queries, docs = m.encode_queries(ref["queries"]), m.encode_corpus(ref["docs"])
        else:
            emb = ICLEmbedder(model.path, query_max_length=512, passage_max_length=512, padding_side=model.spec.padding_side, devices="cpu", batch_size=2)
            ts = Registry().task(name)
            prefixer = FewshotFactory(Setting(k, "authors"), model.spec, emb)(ts, build_task(ts))
            adapter = EmbeddingAdapter(model.spec, emb, prefix_fn=prefixer)
            kind = "query" if types[name] == "Retrieval" else None
            queries = emb.embed(adapter.format_inputs(ref["queries"], Meta(name, types[name]), kind, hf_split="test", hf_subset="default"))
            docs = emb.embed(adapter.format_inputs(ref["docs"], Meta(name, types[name]), "document"))
        np.testing.assert_allclose(queries, arrays[f"{name}_queries"], atol=1e-5)
        np.testing.assert_allclose(docs, arrays[f"{name}_docs"], atol=1e-5)


def test_results_of_another_recipe_are_an_experiment_of_their_own(tiny_bert, tmp_path, monkeypatch, capsys):
    """The model's own recipe and --recipe bge-base-en-v1.5 write two result sets; the report shows two
    rows, each file names its recipe, and regress against the first finds no regression in the second."""
    from evalkit.cli import main

    monkeypatch.setenv("EVALKIT_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "results"
    assert main(["run", "--model", str(tiny_bert), "--tasks", "STS16", "--output", str(out)]) == 0
    assert main(["run", "--model", str(tiny_bert), "--tasks", "STS16", "--output", str(out), "--recipe", "bge-base-en-v1.5"]) == 0
    files = sorted(out.rglob("STS16.json"))
    assert len(files) == 2 and files[1].parent.name == "recipe-bge-base-en-v1.5"
    recipes = [json.loads(f.read_text())["evalkit"]["recipe"] for f in files]
    assert [r["name"] for r in recipes] == ["defaults", "bge-base-en-v1.5"]
    assert recipes[0]["normalize"] is True and recipes[1]["normalize"] is False
    capsys.readouterr()
    assert main(["report", "--results", str(out), "--benchmark", "offline-en", "--format", "md"]) == 0
    board = capsys.readouterr().out
    assert "[recipe-bge-base-en-v1.5]" in board
    baseline = files[0].parent
    assert main(["regress", "--baseline", str(baseline), "--results", str(out)]) == 0


def test_instruction_tasks_instruct_queries_as_retrieval_does():
    """InstructionRetrieval and InstructionReranking have a query side and a document side, as
    Retrieval and Reranking do: a recipe's query instruction goes on their queries (mteb's own BGE and
    llm-embedder implementations prompt every query input), never on their documents."""
    from evalkit.models.catalog import get_spec
    from evalkit.models.recipes import inputs_of

    for name in ("llm-embedder", "bge-en-icl"):
        spec = get_spec(name)
        want = inputs_of(spec, "SomeRetrieval", "Retrieval", "Find the passage")
        for ttype in ("InstructionRetrieval", "InstructionReranking", "Reranking"):
            assert inputs_of(spec, "SomeRetrieval", ttype, "Find the passage") == want, (name, ttype)
        assert want["query"] and want["document"] != want["query"]
