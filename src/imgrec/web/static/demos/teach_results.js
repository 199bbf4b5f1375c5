// How good the trained classifier is, on the held-out samples: the overall and per-class
// accuracy, the confusion matrix (rows: the true class, columns: the predicted one, the
// cells shaded by their share of the row), and the most confident mistakes as thumbnails.
// And the preview's answer: the classes with their probabilities.

import { msg, say } from "../i18n.js";

const percent = (value) => `${(100 * value).toFixed(1)}%`;

function cell(tag, text, className = "") {
  const element = document.createElement(tag);
  element.textContent = text;
  if (className) element.className = className;
  return element;
}

// metrics (a run's, once done): {classes, trained_on, held_out, accuracy (null: nothing
// held out), per_class: [{class, correct, total, accuracy}], confusion: [[count]],
// mistakes: [{sample, class, predicted, confidence, thumbnail}]}
export function renderEvaluation(elements, metrics) {
  const { overall, perClass, confusion, mistakes, noMistakes } = elements;
  say(
    overall,
    metrics.accuracy === null
      ? msg("teach.overall_none", { trained: metrics.trained_on })
      : msg("teach.overall", {
          accuracy: percent(metrics.accuracy),
          count: metrics.held_out,
          trained: metrics.trained_on,
        }),
  );
  perClass.tBodies[0].replaceChildren(
    ...metrics.per_class.map((row) => {
      const line = document.createElement("tr");
      line.dataset.class = row.class;
      line.append(
        cell("td", row.class),
        cell("td", row.total ? percent(row.accuracy) : "-", "number"),
        cell("td", `${row.correct} / ${row.total}`, "number"),
      );
      return line;
    }),
  );
  renderConfusion(confusion, metrics.classes, metrics.confusion);
  mistakes.replaceChildren(...metrics.mistakes.map(mistakeFigure));
  noMistakes.hidden = metrics.mistakes.length > 0 || metrics.accuracy === null;
}

function renderConfusion(table, classes, matrix) {
  const head = document.createElement("tr");
  head.append(cell("th", ""), ...classes.map((name) => cell("th", name, "predicted")));
  const rows = matrix.map((counts, i) => {
    const row = document.createElement("tr");
    const total = counts.reduce((a, b) => a + b, 0) || 1;
    row.append(cell("th", classes[i], "actual"));
    counts.forEach((count, j) => {
      const td = cell("td", String(count), i === j ? "number hit" : "number");
      const share = count / total;
      td.style.setProperty("--share", share.toFixed(3));
      td.dataset.actual = classes[i];
      td.dataset.predicted = classes[j];
      row.append(td);
    });
    return row;
  });
  const thead = document.createElement("thead");
  thead.append(head);
  const tbody = document.createElement("tbody");
  tbody.append(...rows);
  table.replaceChildren(thead, tbody);
}

function mistakeFigure(mistake) {
  const figure = document.createElement("figure");
  const image = document.createElement("img");
  image.src = mistake.thumbnail;
  figure.dataset.sample = mistake.sample;
  image.alt = "";
  const caption = document.createElement("figcaption");
  say(
    caption,
    msg("teach.mistake", {
      actual: mistake.class,
      predicted: mistake.predicted,
      percent: percent(mistake.confidence),
    }),
  );
  figure.append(image, caption);
  return figure;
}

// The preview's classes, most probable first: [{class, probability}].
export function renderTop(list, top) {
  list.replaceChildren(
    ...top.map((entry) => {
      const item = document.createElement("li");
      const name = cell("span", entry.class, "name");
      const bar = cell("span", "", "bar");
      const fill = cell("span", "", "fill");
      fill.style.width = percent(entry.probability);
      bar.append(fill);
      item.append(name, bar, cell("span", percent(entry.probability), "pct"));
      return item;
    }),
  );
}
