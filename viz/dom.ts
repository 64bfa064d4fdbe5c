/** Building DOM and SVG elements without a framework: the page is small and redraws by hand. */

type Attrs = Record<string, string | number | boolean | null | undefined>;
type Child = Node | string | null | undefined | false;

const svgNs = 'http://www.w3.org/2000/svg';

function setAttrs(node: Element, attrs: Attrs): void {
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    node.setAttribute(k, v === true ? '' : String(v));
  }
}

function append(node: Element, children: Child[]): void {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    node.append(typeof c === 'string' ? document.createTextNode(c) : c);
  }
}

/** An HTML element: el('div', { class: 'x' }, 'text', child). */
export function el<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Attrs = {}, ...children: Child[]): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  setAttrs(node, attrs);
  append(node, children);
  return node;
}

/** An SVG element. */
export function svg<K extends keyof SVGElementTagNameMap>(tag: K, attrs: Attrs = {}, ...children: Child[]): SVGElementTagNameMap[K] {
  const node = document.createElementNS(svgNs, tag);
  setAttrs(node, attrs);
  append(node, children);
  return node;
}

/** Multi-line SVG text: one tspan per line. */
export function svgLines(x: number, y: number, lines: string[], lineHeight: number, attrs: Attrs = {}): SVGTextElement {
  const text = svg('text', { x, y, ...attrs });
  lines.forEach((line, i) => text.append(svg('tspan', { x, dy: i === 0 ? 0 : lineHeight }, line)));
  return text;
}

export function byId<T extends HTMLElement>(id: string): T {
  const node = document.getElementById(id);
  if (!node) throw new Error(`the page has no #${id}`);
  return node as T;
}
