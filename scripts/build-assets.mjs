// Part of `npm run build`: what the compiled servers read besides their code,
// copied next to it in dist/ (the descriptor sets that server reflection serves).
import { cpSync, readdirSync } from 'node:fs';
import { join } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
for (const file of readdirSync(join(root, 'gen')).filter((f) => f.endsWith('.binpb'))) {
  cpSync(join(root, 'gen', file), join(root, 'dist', 'gen', file));
}
