"""The train step: DeepSpeed fine-tuning of a seq2seq model on the shards artifact.

`core.run_train` is the entry point; `worker` runs inside each torchrun process.
"""
