// Address settings that list several replicas of a service.
import { expect } from 'chai';
import { parseIssuerAddresses } from '../../authorizer/issuers.js';
import { channelTarget, splitAddresses } from '../../common/rpc.js';

const roundRobin = JSON.stringify({ loadBalancingConfig: [{ round_robin: {} }] });

describe('replica addresses', () => {
  describe('channelTarget', () => {
    it('uses one address as given (a DNS name may resolve to every replica), with round robin', () => {
      for (const address of ['127.0.0.1:50052', 'issuer.city1.internal:50052', 'dns:///issuer:50052']) {
        const { target, options } = channelTarget(address);
        expect(target).to.equal(address);
        expect(options['grpc.service_config']).to.equal(roundRobin);
      }
    });

    it('turns several IP addresses into one static target balanced round robin', () => {
      expect(channelTarget('127.0.0.1:50052,127.0.0.1:50062')).to.deep.include({ target: 'ipv4:127.0.0.1:50052,127.0.0.1:50062' });
      expect(channelTarget(' 10.0.0.5:1 , localhost:2 ').target).to.equal('ipv4:10.0.0.5:1,127.0.0.1:2');
      expect(channelTarget('[::1]:50052,[fd00::5]:50052').target).to.equal('ipv6:[::1]:50052,[fd00::5]:50052');
      expect(channelTarget('127.0.0.1:50052,127.0.0.1:50062').options['grpc.service_config']).to.equal(roundRobin);
    });

    it('refuses lists it cannot resolve statically, saying why', () => {
      expect(() => channelTarget('issuer-a:50052,issuer-b:50052')).to.throw(/IP:port entries only/);
      expect(() => channelTarget('127.0.0.1:1,[::1]:2')).to.throw(/not both/);
      expect(() => channelTarget('127.0.0.1,127.0.0.2:1')).to.throw(/IP:port/);
      expect(() => channelTarget(' , ')).to.throw(/no address/);
    });

    it('splits a setting into its addresses', () => {
      expect(splitAddresses('a:1, b:2,')).to.deep.equal(['a:1', 'b:2']);
    });
  });

  describe('ISSUER_ADDRESSES', () => {
    it('maps issuer ids to their addresses, one or several replicas each', () => {
      expect(parseIssuerAddresses('issuer-1=127.0.0.1:50052,issuer-2=10.0.0.5:50052')).to.deep.equal({
        'issuer-1': '127.0.0.1:50052',
        'issuer-2': '10.0.0.5:50052',
      });
      expect(parseIssuerAddresses('issuer-1=127.0.0.1:50052,127.0.0.1:50062,issuer-2=10.0.0.5:50052')).to.deep.equal({
        'issuer-1': '127.0.0.1:50052,127.0.0.1:50062',
        'issuer-2': '10.0.0.5:50052',
      });
      expect(parseIssuerAddresses('issuer-1=127.0.0.1:50052,issuer-2=10.0.0.5:50052,issuer-1=127.0.0.1:50062')).to.deep.equal({
        'issuer-1': '127.0.0.1:50052,127.0.0.1:50062',
        'issuer-2': '10.0.0.5:50052',
      });
    });

    it('refuses an entry without an issuer id', () => {
      expect(() => parseIssuerAddresses('127.0.0.1:50052')).to.throw(/issuer-id=host:port/);
      expect(() => parseIssuerAddresses('issuer-1=')).to.throw(/issuer-id=host:port/);
    });
  });
});
