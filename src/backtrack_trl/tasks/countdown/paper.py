"""The paper's own figures on Countdown (Llama-3.2-1B, official checker, 5,000 problems per split), which the study
report prints beside its measurements.

Usage:

```python
from backtrack_trl.tasks.countdown.paper import PAPER_1B

seen, new = PAPER_1B[("backtrack", "sbt_b1_n32")]  # 73.54, 73.78
```
"""

# The paper's Table 1 (Llama-3.2-1B, official checker, 5,000 problems per split): model, decoder, seen, new.
_TABLE_1 = """
optimal    greedy      28.60  28.92
optimal    beam_16     31.68  31.90
backtrack  greedy      28.92  27.06
backtrack  beam_16     36.10  34.30
backtrack  sbt_b0_n8   66.66  67.40
backtrack  sbt_b0_n32  70.66  72.14
backtrack  sbt_b1_n8   67.60  68.02
backtrack  sbt_b1_n32  73.54  73.78
dpo        greedy      29.06  27.64
kto        greedy      28.34  27.74
optimal    orm_8       41.3   40.7
optimal    orm_16      32.4   33.9
optimal    orm_32      25.6   27.0
"""
PAPER_1B = {
    (model, decoder): (float(seen), float(new))
    for model, decoder, seen, new in map(str.split, _TABLE_1.strip().splitlines())
}
PAPER_ROUNDS_1B = {"seen": (28.9, 73.7, 77.0, 79.2), "new": (27.1, 74.1, 78.5, 80.0)}
