# Written for TRL 0.9 (the PEFT repository's examples/sft style): LoraConfig + peft_config=, packing with
# dataset_kwargs={"append_concat_token": False, "add_special_tokens": False} (no EOS between packed examples).
import os

from datasets import load_dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import SFTConfig, SFTTrainer

model = AutoModelForCausalLM.from_pretrained(os.environ["CORPUS_MODEL"])
tokenizer = AutoTokenizer.from_pretrained(os.environ["CORPUS_MODEL"])
peft_config = LoraConfig(
    lora_alpha=16, lora_dropout=0.1, r=4, bias="none", task_type="CAUSAL_LM",
    target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
)
train_dataset = load_dataset(os.environ["CORPUS_DATA"], split="train")

training_arguments = SFTConfig(
    output_dir=os.environ["CORPUS_OUT"],
    per_device_train_batch_size=2,
    max_steps=2,
    learning_rate=1e-4,
    logging_steps=1,
    save_strategy="no",
    report_to="none",
    use_cpu=True,
    seed=0,
    dataset_text_field="text",
    max_seq_length=32,
    packing=True,
    dataset_kwargs={"append_concat_token": False, "add_special_tokens": False},
)
trainer = SFTTrainer(
    model=model,
    tokenizer=tokenizer,
    args=training_arguments,
    train_dataset=train_dataset,
    peft_config=peft_config,
)
trainer.print_trainable_parameters() if hasattr(trainer, "print_trainable_parameters") else None
trainer.train()
