"""Videos whose frames carry their own index in the pixels, for exact decoding tests."""
import numpy as np

BITS = 8  # frame index is written as 8 black/white blocks


def indexed_frames(n: int, height: int = 64, width: int = 96, gray: bool = False) -> np.ndarray:
    """Frames whose pixels carry their own index: bit b of i is block b (white = 1)."""
    frames = np.full((n, height, width), 40, np.uint8)
    block = width // BITS
    for i in range(n):
        for b in range(BITS):
            if (i >> b) & 1:
                frames[i, height // 4: 3 * height // 4, b * block: (b + 1) * block] = 215
    return frames if gray else np.repeat(frames[..., None], 3, axis=-1)


def read_index(frame: np.ndarray) -> int:
    """Inverse of ``indexed_frames`` for one decoded (H, W, 3) frame, at any size."""
    h, w = frame.shape[:2]
    block = w / BITS
    row = frame[h // 2, :, 0].astype(int)
    return sum(1 << b for b in range(BITS) if row[int((b + 0.5) * block)] > 127)
