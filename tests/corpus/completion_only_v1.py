# Written for TRL 1.x (2025 docs style): SFTConfig(max_length=..., completion_only_loss=True), a
# prompt/completion dataset, processing_class=. Meant to run on old releases too.
import os

from datasets import load_dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import SFTConfig, SFTTrainer

model = AutoModelForCausalLM.from_pretrained(os.environ["CORPUS_MODEL"])
tokenizer = AutoTokenizer.from_pretrained(os.environ["CORPUS_MODEL"])
dataset = load_dataset("json", data_files=os.path.join(os.environ["CORPUS_DATA"], "prompt_completion.jsonl"),
                       split="train")

config = SFTConfig(
    output_dir=os.environ["CORPUS_OUT"],
    max_length=24,
    completion_only_loss=True,
    per_device_train_batch_size=2,
    max_steps=2,
    learning_rate=1e-4,
    logging_steps=1,
    save_strategy="no",
    report_to="none",
    use_cpu=True,
    bf16=False,
    seed=0,
)
trainer = SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer)
trainer.train()
