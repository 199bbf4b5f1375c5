// The model's layers as a table; a click on a layer with a spatial (H x W x C) output
// asks for its feature maps on the current photo and shows them as a grid.

import { msg, say } from "./i18n.js";

const spatial = (shape) => Array.isArray(shape) && shape.length === 4;

// [null, 112, 112, 32] (the batch first) reads "112 x 112 x 32"; several outputs, one each.
function formatShape(shape) {
  if (!Array.isArray(shape)) return "-";
  if (shape.length && Array.isArray(shape[0])) return shape.map(formatShape).join(", ");
  return shape.slice(1).join(" x ");
}

export class LayerView {
  constructor({ table, grid, caption, onPick }) {
    this.body = table.querySelector("tbody");
    this.grid = grid;
    this.caption = caption;
    this.onPick = onPick;
  }

  show(layers) {
    this.grid.replaceChildren();
    say(this.caption, msg("layers.maps"));
    this.body.replaceChildren(
      ...layers.map((layer, index) => {
        const row = document.createElement("tr");
        row.dataset.layer = layer.name;
        row.className = spatial(layer.output_shape) ? "spatial" : "flat";
        const cells = [
          String(index),
          layer.name,
          layer.type,
          formatShape(layer.output_shape),
          Number(layer.parameters).toLocaleString("en"),
        ];
        row.append(
          ...cells.map((text, column) => {
            const cell = document.createElement("td");
            cell.textContent = text;
            if (column === 0 || column === 4) cell.className = "number";
            // Layers inside a nested model (a transfer backbone) are indented under it.
            if (column === 1 && layer.depth) cell.style.paddingLeft = `${0.4 + layer.depth}rem`;
            return cell;
          }),
        );
        if (row.className === "spatial") {
          row.tabIndex = 0;
          row.addEventListener("click", () => this.pick(row));
          row.addEventListener("keydown", (event) => {
            if (event.key === "Enter") this.pick(row);
          });
        }
        return row;
      }),
    );
  }

  pick(row) {
    for (const other of this.body.querySelectorAll("tr[aria-selected]")) {
      other.removeAttribute("aria-selected");
    }
    row.setAttribute("aria-selected", "true");
    this.onPick(row.dataset.layer);
  }

  showActivations(result) {
    say(
      this.caption,
      msg("layers.maps_of", {
        layer: result.layer,
        shape: result.shape.join(" x "),
        count: result.channels.length,
      }),
    );
    this.grid.replaceChildren(
      ...result.channels.map((src, channel) => {
        const figure = document.createElement("figure");
        const image = document.createElement("img");
        image.src = src;
        say(image, msg("layers.channel", { channel }), "alt");
        const caption = document.createElement("figcaption");
        caption.textContent = String(channel);
        figure.append(image, caption);
        return figure;
      }),
    );
  }

  clear() {
    this.body.replaceChildren();
    this.grid.replaceChildren();
  }
}
