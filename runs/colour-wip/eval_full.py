import sys, glob, numpy as np, torch
from PIL import Image
from adaspring_ros.core.model.checkpoint import load_backbone
from adaspring_ros.core.model.config import CompressionConfig
from adaspring_ros.core.data.transforms import preprocess
torch.set_num_threads(1)
m = load_backbone(sys.argv[1]).eval()
card = m.card
rng = np.random.default_rng(0)
for split in ("train", "val"):
    files = []
    for ci, c in enumerate(card.classes):
        fs = sorted(glob.glob(f"runs/colour-task/{split}/{c}/*.png"))
        files += [(f, ci) for f in fs]
    pick = rng.choice(len(files), 600, replace=False)
    x = np.stack([np.asarray(Image.open(files[i][0]).convert("RGB")) for i in pick])
    y = np.array([files[i][1] for i in pick])
    m.set_active(CompressionConfig.full(m.space))
    with torch.no_grad():
        p = m(torch.from_numpy(preprocess(x, 64, card))).argmax(1).numpy()
    print(split, (p == y).mean(), np.bincount(p, minlength=8))
