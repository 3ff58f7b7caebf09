"""The registered summarizer as an MLflow pyfunc, saved as *models from code*: this file is copied into
every model version's prefix, beside the weights, and MLflow runs it to load the model.

The prompt template, the generation settings and the tokenizer travel inside the version (the
template and settings in the MLmodel's model_config, the tokenizer beside the weights), so a caller
sends raw dialogues and gets what `mixtune infer` writes for the same version. The weights are the
save_pretrained directory this file sits in (safetensors only); seq2seq and decoder-only models alike.

It imports only what travels with it (copies of components/common/generation.py and weights.py, shipped
as the model's code_paths in the package `mixtune_pyfunc`), transformers and MLflow: no mixtune install
is needed where it is loaded.
No `from __future__ import annotations`: MLflow reads predict's signature.
"""
from pathlib import Path

import mlflow
from mlflow.pyfunc import PythonModel

INPUT_COLUMN = "dialogue"  # the column read when a DataFrame (dataframe_records) has several


def as_texts(model_input) -> list:
    """The dialogues of one predict call: a list/array of strings, a Series, a one-column DataFrame,
    a DataFrame with a `dialogue` column, or a {"dialogue": [...]} dict."""
    import pandas as pd

    if isinstance(model_input, dict):
        model_input = pd.DataFrame(model_input)
    if isinstance(model_input, pd.DataFrame):
        if INPUT_COLUMN in model_input.columns:
            model_input = model_input[INPUT_COLUMN]
        elif len(model_input.columns) == 1:
            model_input = model_input.iloc[:, 0]
        else:
            raise ValueError(f"input has columns {list(model_input.columns)}: send one column, or one named "
                             f"{INPUT_COLUMN!r}")
    texts = list(model_input.tolist() if hasattr(model_input, "tolist") else model_input)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise ValueError(f"input {i} is {type(text).__name__}, not a string (a dialogue)")
    return texts


class Summarizer(PythonModel):
    def load_context(self, context) -> None:
        from transformers import AutoTokenizer

        from mixtune_pyfunc.generation import GenerationSettings, check_prompt
        from mixtune_pyfunc.weights import load_local_model

        spec = context.model_config or {}
        root = Path(__file__).resolve().parent  # MLflow loads this file from the model's own folder
        self.prompt = spec["prompt"]
        check_prompt(self.prompt, where=f"{root}/MLmodel model_config.prompt")
        self.settings = GenerationSettings(**spec["generation"])
        self.model = load_local_model(str(root))  # first: refuses a folder without safetensors weights
        self.tokenizer = AutoTokenizer.from_pretrained(root)
        self.model.eval()

    def predict(self, context, model_input, params=None) -> list:
        from mixtune_pyfunc.generation import build_prompt, generate

        prompts = [build_prompt(self.prompt, text) for text in as_texts(model_input)]
        if not prompts:
            return []
        return generate(self.model, self.tokenizer, prompts, self.settings, progress=False)


mlflow.models.set_model(Summarizer())
