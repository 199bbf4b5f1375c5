// The demo menu, Keras.js style: one link per demo in the page's left column. Each demo is
// its own page with its own address (so it can be bookmarked): "/" for ImageNet
// recognition, "/demos/NAME" for the rest (static/demos/NAME.html, served by
// imgrec.web.routes.pages). To add a demo: its page and module in static/demos/, a line
// in DEMOS below, and its "menu.NAME" key in both i18n tables.

import { msg, say } from "./i18n.js";

export const DEMOS = [
  { name: "imagenet", path: "/", label: msg("menu.imagenet") },
  { name: "draw", path: "/demos/draw", label: msg("menu.draw") },
  { name: "vae", path: "/demos/vae", label: msg("menu.vae") },
  { name: "acgan", path: "/demos/acgan", label: msg("menu.acgan") },
  {
    name: "super-resolution",
    path: "/demos/super-resolution",
    label: msg("menu.super-resolution"),
  },
  { name: "teach", path: "/demos/teach", label: msg("menu.teach") },
];

// The demo this address shows: "/" is ImageNet recognition, "/demos/NAME" is NAME.
export function currentDemo(pathname = window.location.pathname) {
  const path = pathname.length > 1 ? pathname.replace(/\/+$/, "") : pathname;
  return DEMOS.find((demo) => demo.path === path)?.name ?? null;
}

// Fill <nav id="menu"> with the demos' links; the current one is marked aria-current.
export function startMenu(nav = document.getElementById("menu")) {
  const current = currentDemo();
  const title = document.createElement("h2");
  say(title, msg("menu.title"));
  const list = document.createElement("ul");
  for (const demo of DEMOS) {
    const item = document.createElement("li");
    const link = document.createElement("a");
    link.href = demo.path;
    link.dataset.demo = demo.name;
    say(link, demo.label);
    if (demo.name === current) link.setAttribute("aria-current", "page");
    item.append(link);
    list.append(item);
  }
  nav.replaceChildren(title, list);
}
