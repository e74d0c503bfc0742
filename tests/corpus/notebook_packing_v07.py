# Written for TRL 0.7/0.8 (a 2023 Colab notebook, cell by cell): TrainingArguments + SFTTrainer(tokenizer=...,
# packing=True, dataset_text_field=..., max_seq_length=...).
import os

# %% [1] load the model and the tokenizer
import torch
from datasets import load_dataset
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainingArguments
from trl import SFTTrainer

model_id = os.environ["CORPUS_MODEL"]  # e.g. "facebook/opt-350m"
model = AutoModelForCausalLM.from_pretrained(model_id, torch_dtype=torch.float32)
tokenizer = AutoTokenizer.from_pretrained(model_id)

# %% [2] the dataset
dataset = load_dataset("json", data_files=os.path.join(os.environ["CORPUS_DATA"], "train.jsonl"), split="train")

# %% [3] training arguments
training_args = TrainingArguments(
    output_dir=os.environ["CORPUS_OUT"],
    per_device_train_batch_size=2,
    gradient_accumulation_steps=1,
    learning_rate=2e-4,
    logging_steps=1,
    max_steps=2,
    save_strategy="no",
    evaluation_strategy="no",
    warmup_ratio=0.03,
    lr_scheduler_type="constant",
    report_to="none",
    no_cuda=True,
    seed=0,
)

# %% [4] the trainer
trainer = SFTTrainer(
    model=model,
    train_dataset=dataset,
    dataset_text_field="text",
    max_seq_length=32,
    tokenizer=tokenizer,
    args=training_args,
    packing=True,
)

# %% [5] train
trainer.train()
