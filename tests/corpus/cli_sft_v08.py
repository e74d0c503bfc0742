# Written for TRL 0.8 (examples/scripts/sft.py style): TrlParser + SftScriptArguments + ModelConfig, the SFT
# options passed to SFTTrainer as keyword arguments, the model loaded by TRL from its name.
#   python cli_sft_v08.py --model_name_or_path ... --dataset_name ... --dataset_text_field content \
#       --max_seq_length 8 --output_dir out --evaluation_strategy no ...
import torch
from datasets import load_dataset
from transformers import AutoTokenizer, TrainingArguments
from trl import ModelConfig, SFTTrainer, get_kbit_device_map, get_peft_config, get_quantization_config
from trl.commands.cli_utils import SftScriptArguments, TrlParser, init_zero_verbose

init_zero_verbose()

parser = TrlParser((SftScriptArguments, TrainingArguments, ModelConfig))
args, training_args, model_config = parser.parse_args_and_config()

torch_dtype = (
    model_config.torch_dtype
    if model_config.torch_dtype in ["auto", None]
    else getattr(torch, model_config.torch_dtype)
)
quantization_config = get_quantization_config(model_config)
model_kwargs = dict(
    revision=model_config.model_revision,
    trust_remote_code=model_config.trust_remote_code,
    attn_implementation=model_config.attn_implementation,
    torch_dtype=torch_dtype,
    use_cache=False if training_args.gradient_checkpointing else True,
    device_map=get_kbit_device_map() if quantization_config is not None else None,
    quantization_config=quantization_config,
)
tokenizer = AutoTokenizer.from_pretrained(model_config.model_name_or_path, use_fast=True)
tokenizer.pad_token = tokenizer.eos_token

raw_datasets = load_dataset(args.dataset_name)
train_dataset = raw_datasets[args.dataset_train_name]

trainer = SFTTrainer(
    model=model_config.model_name_or_path,
    model_init_kwargs=model_kwargs,
    args=training_args,
    train_dataset=train_dataset,
    dataset_text_field=args.dataset_text_field,
    max_seq_length=args.max_seq_length,
    tokenizer=tokenizer,
    packing=args.packing,
    peft_config=get_peft_config(model_config),
)
trainer.train()
