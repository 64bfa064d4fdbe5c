#!/usr/bin/env -S npx tsx
// The freebs command. Subcommands arrive with the pieces they run.
import { Command } from 'commander';

const program = new Command('freebs').description('FreEBS: a replicated virtual block device over NBD');
program.parse();
