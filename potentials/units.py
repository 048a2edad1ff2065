"""Physical constants, CODATA 2018 (SI), the one source of constants for every layer of twin."""

HPLANCK = 6.62607015e-34  # Planck constant [J s]
E = 1.602176634e-19  # elementary charge [C]
ME = 9.1093837015e-31  # electron rest mass [kg]
C = 299792458.0  # speed of light [m/s]
KB = 1.380649e-23  # Boltzmann constant [J/K]
AMU = 1.66053906660e-27  # atomic mass unit [kg]
BOHR = 0.529177210903  # Bohr radius [Angstrom]
RYDBERG = 13.605693122994  # Rydberg energy [eV]
MC2_EV = ME * C**2 / E  # electron rest energy [eV]
AMU_EV = AMU * C**2 / E  # atomic mass unit energy m_u c^2 [eV] (931.494 MeV); from CODATA 2018 AMU, C, E
FINE_STRUCTURE = 7.2973525693e-3  # fine-structure constant alpha (CODATA 2018) [dimensionless]
BARN = 1e-8  # one barn, 1e-28 m^2 [Angstrom^2]
