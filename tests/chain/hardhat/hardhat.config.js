// Hardhat's own node for the chain tests: the default in-process network,
// mining every transaction at once like the embedded chain.
module.exports = {
  networks: {
    hardhat: { chainId: 31337 },
  },
};
