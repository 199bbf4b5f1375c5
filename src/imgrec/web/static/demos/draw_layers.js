// Every layer's output as pictures, Keras.js style: one canvas per layer. A layer of
// H x W x C (a convolution, a pooling) is drawn as C small H x W tiles in a near-square grid;
// a vector (Flatten, Dense) as one pixel per unit, wrapped into a near-square block. Each
// layer is scaled from its own lowest to its own highest value (black to white), so that
// tiles of one layer can be compared with each other.

import { msg, say } from "../i18n.js";

const GAP = 1; // white pixels between tiles
const WIDEST_CSS_PX = 360;
// How many CSS pixels a unit may take at most: tiles of maps, cells of vectors.
const MAP_ZOOM = 8;
const VECTOR_ZOOM = 24;

function grid(count) {
  const columns = Math.ceil(Math.sqrt(count));
  return { columns, rows: Math.ceil(count / columns) };
}

// The canvas size of a segment, and where unit `index` of channel `channel` goes.
function layout(shape) {
  if (shape.length === 3) {
    const [height, width, channels] = shape;
    const { columns, rows } = grid(channels);
    return {
      width: columns * (width + GAP) - GAP,
      height: rows * (height + GAP) - GAP,
      pixel(index) {
        const channel = index % channels;
        const spot = Math.floor(index / channels);
        const y = Math.floor(spot / width);
        const x = spot % width;
        const top = Math.floor(channel / columns) * (height + GAP);
        const left = (channel % columns) * (width + GAP);
        return (top + y) * this.width + left + x;
      },
    };
  }
  const units = shape.reduce((a, b) => a * b, 1);
  const { columns, rows } = units <= 16 ? { columns: units, rows: 1 } : grid(units);
  return { width: columns, height: rows, pixel: (index) => index };
}

function paint(canvas, shape, values) {
  const place = layout(shape);
  if (canvas.width !== place.width || canvas.height !== place.height) {
    canvas.width = place.width;
    canvas.height = place.height;
    const zoom = shape.length === 3 ? MAP_ZOOM : VECTOR_ZOOM;
    canvas.style.width = `${Math.min(WIDEST_CSS_PX, place.width * zoom)}px`;
  }
  let low = Infinity;
  let high = -Infinity;
  for (const value of values) {
    if (value < low) low = value;
    if (value > high) high = value;
  }
  const range = high > low ? high - low : 1;
  const context = canvas.getContext("2d");
  const image = context.createImageData(place.width, place.height);
  image.data.fill(255); // the gaps stay white
  for (let i = 0; i < values.length; i++) {
    const grey = Math.round(((values[i] - low) / range) * 255);
    const at = place.pixel(i) * 4;
    image.data[at] = grey;
    image.data[at + 1] = grey;
    image.data[at + 2] = grey;
  }
  context.putImageData(image, 0, 0);
}

export class LayerPictures {
  constructor(container) {
    this.container = container;
    this.names = "";
    this.canvases = [];
  }

  // segments: [{name, type, shape, offset, size}] (/api/digits/onnx.json); values: every
  // layer's output, one Float32Array.
  show(segments, values) {
    const names = segments.map((segment) => segment.name).join(" ");
    if (names !== this.names) this.build(segments, names);
    segments.forEach((segment, i) => {
      const part = values.subarray(segment.offset, segment.offset + segment.size);
      paint(this.canvases[i], segment.shape, part);
    });
  }

  build(segments, names) {
    this.names = names;
    this.canvases = [];
    const blocks = segments.map((segment) => {
      const block = document.createElement("figure");
      block.className = "draw-layer";
      block.dataset.layer = segment.name;
      const title = document.createElement("h3");
      const shape = segment.shape.join(" x ");
      say(title, msg("draw.layer_caption", { name: segment.name, type: segment.type, shape }));
      const canvas = document.createElement("canvas");
      say(canvas, msg("draw.layer_picture", { name: segment.name }), "aria-label");
      this.canvases.push(canvas);
      block.append(title, canvas);
      return block;
    });
    this.container.replaceChildren(...blocks);
  }

  clear() {
    this.names = "";
    this.canvases = [];
    this.container.replaceChildren();
  }
}
