// Who may call each TerminalService RPC, by the role in the caller's
// certificate (common/identity.ts). Enforced before any handler when the
// terminal runs with mTLS (common/authz.ts); an RPC missing here is refused.
import type { AccessPolicy } from '../common/authz.js';
import { ERROR_DOMAIN } from './handlers.js';

export const terminalPolicy: AccessPolicy = {
  service: 'tapcredit.terminal.v1.TerminalService',
  domain: ERROR_DOMAIN,
  rules: {
    // The card's side of a tap (the terminal plays the reader): the phone app, or a reader driver holding its certificate.
    PresentCard: { allow: ['phone', 'ops'] },
    // Administration.
    GetTerminalStatus: { allow: ['ops'] },
  },
};
