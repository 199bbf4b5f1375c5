// MNIST's own preprocessing of a drawn digit, step for step as imgrec.core.digits.mnist_digit
// does it in Python (tests/test_draw_browser.py holds the two together on drawn strokes):
//
// - ink is 255 - grey (Pillow's grey of RGB, in its fixed-point form); the canvas draws black
//   strokes on white, so ink is 0 on paper and 255 in the middle of a stroke;
// - the bounding box of every pixel with any ink is scaled so that its longer side becomes
//   exactly 20 pixels, the shorter floor(side * 20 / longer + 0.5) (at least 1), by area
//   averaging (each new pixel the mean of the old pixels under it, weighted by how much of
//   each it covers), and rounded to whole grey levels with floor(v + 0.5);
// - that 20 x 20 (or narrower) picture is placed in 28 x 28 so that its centre of mass
//   (pixel-centre coordinates, pixel i at i + 0.5) lands within half a pixel of (14, 14):
//   it moves by floor(14 - centre + 0.5) pixels on each axis; what falls outside is cut;
// - no ink at all gives 28 x 28 zeros.

export const MNIST_SIZE = 28;
export const MNIST_BOX = 20;

// Ink levels (Uint8Array, width x height, row by row) of RGBA pixels (a canvas's ImageData).
export function inkFromRGBA(rgba) {
  const ink = new Uint8Array(rgba.length / 4);
  for (let i = 0, j = 0; j < ink.length; i += 4, j++) {
    const grey = (rgba[i] * 19595 + rgba[i + 1] * 38470 + rgba[i + 2] * 7471 + 0x8000) >> 16;
    ink[j] = 255 - grey;
  }
  return ink;
}

// For each new pixel of one axis resampled from `size` to `newSize` by area averaging: the
// first old pixel it covers and the weights of the old pixels from there (summing to 1).
export function areaWeights(size, newSize) {
  const rows = [];
  for (let i = 0; i < newSize; i++) {
    const start = (i * size) / newSize;
    const end = ((i + 1) * size) / newSize;
    const first = Math.floor(start);
    const weights = [];
    for (let k = first; k < Math.min(size, Math.ceil(end)); k++) {
      const overlap = Math.min(k + 1, end) - Math.max(k, start);
      weights.push(overlap > 0 ? (overlap * newSize) / size : 0);
    }
    rows.push({ first, weights });
  }
  return rows;
}

// The drawing's ink (width x height, row by row, 0-255) as an MNIST digit: a Uint8Array of
// 28 x 28 grey levels, ink bright on black.
export function mnistDigit(ink, width, height) {
  const out = new Uint8Array(MNIST_SIZE * MNIST_SIZE);
  let top = height;
  let bottom = -1;
  let left = width;
  let right = -1;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      if (ink[y * width + x] > 0) {
        if (y < top) top = y;
        if (y > bottom) bottom = y;
        if (x < left) left = x;
        if (x > right) right = x;
      }
    }
  }
  if (bottom < 0) return out;
  const cropHeight = bottom - top + 1;
  const cropWidth = right - left + 1;
  const longer = Math.max(cropHeight, cropWidth);
  const newHeight = Math.max(1, Math.floor((cropHeight * MNIST_BOX) / longer + 0.5));
  const newWidth = Math.max(1, Math.floor((cropWidth * MNIST_BOX) / longer + 0.5));
  // Rows first, then columns, as numpy's (rows @ crop) @ columns.T.
  const rowWeights = areaWeights(cropHeight, newHeight);
  const columnWeights = areaWeights(cropWidth, newWidth);
  const byRows = new Float64Array(newHeight * cropWidth);
  for (let i = 0; i < newHeight; i++) {
    const { first, weights } = rowWeights[i];
    for (let x = 0; x < cropWidth; x++) {
      let sum = 0;
      for (let k = 0; k < weights.length; k++) {
        sum += weights[k] * ink[(top + first + k) * width + left + x];
      }
      byRows[i * cropWidth + x] = sum;
    }
  }
  const fitted = new Float64Array(newHeight * newWidth);
  let total = 0;
  let massY = 0;
  let massX = 0;
  for (let i = 0; i < newHeight; i++) {
    for (let j = 0; j < newWidth; j++) {
      const { first, weights } = columnWeights[j];
      let sum = 0;
      for (let k = 0; k < weights.length; k++) {
        sum += byRows[i * cropWidth + first + k] * weights[k];
      }
      const value = Math.min(255, Math.max(0, Math.floor(sum + 0.5)));
      fitted[i * newWidth + j] = value;
      total += value;
      massY += value * (i + 0.5);
      massX += value * (j + 0.5);
    }
  }
  if (total === 0) return out;
  const shiftY = Math.floor(MNIST_SIZE / 2 - massY / total + 0.5);
  const shiftX = Math.floor(MNIST_SIZE / 2 - massX / total + 0.5);
  for (let i = 0; i < newHeight; i++) {
    const y = i + shiftY;
    if (y < 0 || y >= MNIST_SIZE) continue;
    for (let j = 0; j < newWidth; j++) {
      const x = j + shiftX;
      if (x >= 0 && x < MNIST_SIZE) out[y * MNIST_SIZE + x] = fitted[i * newWidth + j];
    }
  }
  return out;
}
