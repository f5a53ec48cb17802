"""The improvement loop end to end on the demo, with the commands a maintainer runs:

1. the bundled model behind the service with a request log routes the demo dev set
   (``POST /v1/route``, handlers not run);
2. every answer that differs from the dev file's gold call is corrected through
   ``POST /v1/feedback`` (as a reviewer would on the review page);
3. ``intentkit feedback export`` writes the corrections;
4. ``intentkit train TRAIN corrections.jsonl --init-from models/smart-home`` continues training
   on the old data plus the corrections;
5. both models route the dev set again: the corrected utterances, and the rest of the dev set
   (which no correction touched) to show nothing else broke.

    python benchmarks/feedback_loop.py --out runs/loop          # ≈ 15 min on 2 cores, most of it training
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

INTENTKIT = [sys.executable, "-c", "from intentkit.cli import main; main()"]


def gold_text(registry: Any, output: str | None) -> str:
    from intentkit.feedback import validate_correction

    return validate_correction(registry, output or "no_intent()")


def route_all(model: Path | None, texts: list[str]) -> list[str]:
    """What the router answers for each text (its call text), with the given model directory."""
    from intentkit import Router
    from intentkit.backends.llamacpp import LlamaCppBackend
    from intentkit.demo import SmartHome

    if model is None:
        router = Router.default()
    else:
        router = SmartHome().register(Router(LlamaCppBackend.from_model_dir(model)))
    with router:
        return [router.handle(text, dispatch=False).call_text for text in texts]


def main() -> None:
    import httpx
    from conftest import _serve

    from intentkit import Router
    from intentkit.feedback import RequestLog
    from intentkit.server import create_app
    from trainers.data import load_records

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dev", default=str(ROOT / "examples" / "demo" / "dev.jsonl"))
    parser.add_argument("--train", default=str(ROOT / "examples" / "demo" / "train-dialogues.jsonl"))
    parser.add_argument("--init-from", default=str(ROOT / "models" / "smart-home"))
    parser.add_argument("--epochs", default="1")
    parser.add_argument("--learning-rate", default="1e-4")
    parser.add_argument("--out", required=True, help="a working directory: log, corrections, the new model, results")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log_url = f"sqlite:///{out / 'log.db'}"
    records = load_records(args.dev)
    texts = [r.instruction for r in records]

    # 1–2: route through the service, correct what is wrong
    log = RequestLog(log_url)
    router = Router.default()
    gold = [gold_text(router.registry, r.output) for r in records]
    corrected: list[int] = []
    with _serve(create_app(router, log=log)) as url, httpx.Client(base_url=url, timeout=60) as client:
        for index, (text, expected) in enumerate(zip(texts, gold, strict=True)):
            answer = client.post("/v1/route", json={"text": text, "dispatch": False}).json()
            if answer["call_text"] != expected:
                response = client.post(
                    "/v1/feedback", json={"request_id": answer["request_id"], "vote": "down", "correct": expected}
                )
                response.raise_for_status()
                corrected.append(index)
    log.close()
    router.close()
    print(f"routed {len(texts)}, corrected {len(corrected)}", flush=True)

    # 3–4: export, retrain from the bundled model on old data plus corrections
    corrections = out / "corrections.jsonl"
    subprocess.run([*INTENTKIT, "feedback", "export", "--log", log_url, "--out", str(corrections)], check=True)
    model = out / "model"
    started = time.perf_counter()
    train = [
        *INTENTKIT, "train", args.train, str(corrections), "--init-from", args.init_from, "--out", str(model),
        "--epochs", args.epochs, "--learning-rate", args.learning_rate, "--no-scope", "--holdout", "0",
    ]  # fmt: skip
    subprocess.run(train, check=True)
    train_minutes = (time.perf_counter() - started) / 60

    # 5: both models on the corrected utterances and on the rest of the dev set
    before = route_all(None, texts)
    after = route_all(model, texts)
    rest = [i for i in range(len(texts)) if i not in set(corrected)]

    def right(answers: list[str], indices: list[int]) -> int:
        return sum(answers[i] == gold[i] for i in indices)

    result = {
        "date": time.strftime("%Y-%m-%d"),
        "dev_rows": len(texts),
        "corrected": len(corrected),
        "corrected_right_before": right(before, corrected),
        "corrected_right_after": right(after, corrected),
        "rest_rows": len(rest),
        "rest_right_before": right(before, rest),
        "rest_right_after": right(after, rest),
        "train_minutes": round(train_minutes, 1),
        "corrections": [{"utterance": texts[i], "gold": gold[i], "before": before[i], "after": after[i]} for i in corrected],
        "broken": [
            {"utterance": texts[i], "gold": gold[i], "before": before[i], "after": after[i]}
            for i in rest
            if before[i] == gold[i] and after[i] != gold[i]
        ],
    }
    (out / "result.json").write_text(json.dumps(result, ensure_ascii=False, indent=2), encoding="utf-8")
    print(json.dumps({k: v for k, v in result.items() if k not in ("corrections", "broken")}, ensure_ascii=False))
    for item in result["corrections"]:
        print(f"  {item['utterance']!r}: {item['before']} → {item['after']} (gold {item['gold']})")
    for item in result["broken"]:
        print(f"  broken {item['utterance']!r}: {item['before']} → {item['after']}")


if __name__ == "__main__":
    main()
