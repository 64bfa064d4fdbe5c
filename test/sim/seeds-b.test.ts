/** CI's fixed seeds, second half (see seeds-a). */
import { describe } from 'vitest';
import { seedRange } from './seeds.js';

describe('simulator: seeds 61…120', () => {
  seedRange(61, 60);
});
