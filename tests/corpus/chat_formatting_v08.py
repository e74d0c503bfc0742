# Written for TRL 0.8 (the docs' completion-only recipe, 2024 blog style): a batched formatting_func
# rendering each conversation with the tokenizer's chat template, and DataCollatorForCompletionOnlyLM so
# only the assistant's answer carries loss.
import os

from datasets import load_dataset
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainingArguments
from trl import DataCollatorForCompletionOnlyLM, SFTTrainer

model = AutoModelForCausalLM.from_pretrained(os.environ["CORPUS_MODEL"])
tokenizer = AutoTokenizer.from_pretrained(os.environ["CORPUS_MODEL"])
dataset = load_dataset("json", data_files=os.path.join(os.environ["CORPUS_DATA"], "chat.jsonl"), split="train")


def formatting_prompts_func(example):
    output_texts = []
    for i in range(len(example["messages"])):
        output_texts.append(tokenizer.apply_chat_template(example["messages"][i], tokenize=False))
    return output_texts


collator = DataCollatorForCompletionOnlyLM(response_template="<|assistant|>", tokenizer=tokenizer)

trainer = SFTTrainer(
    model,
    train_dataset=dataset,
    args=TrainingArguments(output_dir=os.environ["CORPUS_OUT"], per_device_train_batch_size=2, max_steps=2,
                           logging_steps=1, save_strategy="no", report_to="none", use_cpu=True, seed=0),
    formatting_func=formatting_prompts_func,
    data_collator=collator,
    max_seq_length=48,
    tokenizer=tokenizer,
)
trainer.train()
