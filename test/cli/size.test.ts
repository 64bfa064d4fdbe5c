import { describe, expect, it } from 'vitest';
import { parseSizeBytes } from '../../cli/size.js';

describe('parseSizeBytes', () => {
  it('reads binary units', () => {
    expect(parseSizeBytes('4096')).toBe(4096);
    expect(parseSizeBytes('10G')).toBe(10 * 1024 ** 3);
    expect(parseSizeBytes('512MiB')).toBe(512 * 1024 ** 2);
    expect(parseSizeBytes('1t')).toBe(1024 ** 4);
  });
  it('refuses what is not a size, with the reason', () => {
    expect(() => parseSizeBytes('ten')).toThrow(/not a size/);
    expect(() => parseSizeBytes('1000')).toThrow(/multiple of 512/);
    expect(() => parseSizeBytes('0')).toThrow(/out of range/);
  });
});
