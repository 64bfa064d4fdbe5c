/**
 * Every machine's state at the cursor, as a table: the answer to "what did each machine think
 * at that moment?" when an event on the timeline is clicked.
 */
import { el } from './dom.js';
import { clock, duration } from './format.js';
import { machineInstances, type World } from './world.js';

export class MachineTable {
  readonly element: HTMLElement;
  private readonly body: HTMLTableSectionElement;
  private readonly caption: HTMLElement;

  constructor(private readonly onSelect: (node: string) => void) {
    this.body = el('tbody');
    this.caption = el('p', { class: 'muted', id: 'machines-at' });
    this.element = el(
      'section',
      { class: 'machines' },
      el('h2', {}, 'Machines at this moment'),
      this.caption,
      el('table', { id: 'machine-table' }, el('thead', {}, el('tr', {}, el('th', {}, 'machine'), el('th', {}, 'of'), el('th', {}, 'state'), el('th', {}, 'for'), el('th', {}, 'from'), el('th', {}, 'on'))), this.body),
    );
    this.body.addEventListener('click', (e) => {
      const node = (e.target as Element).closest('tr')?.dataset.node;
      if (node) this.onSelect(node);
    });
  }

  render(world: World): void {
    this.caption.textContent = world.index < 0 ? 'nothing recorded yet' : `at ${clock(world.atMs)}`;
    this.body.replaceChildren(
      ...machineInstances(world).map((m) =>
        el(
          'tr',
          { 'data-machine': m.machine, 'data-node': m.node, 'data-value': m.value },
          el('td', {}, m.machine),
          el('td', {}, m.node),
          el('td', { class: 'value' }, m.value),
          el('td', {}, duration(world.atMs - m.sinceMs)),
          el('td', {}, m.from ?? ''),
          el('td', {}, m.event ?? ''),
        ),
      ),
    );
  }
}
